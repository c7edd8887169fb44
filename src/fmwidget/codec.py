"""The wire format of the data traits: the one place that knows how arrays travel.

Every data trait (``_maps``, ``_filters``, ``_map``, the payloads in ``_compare`` and the
attribution results in ``_attrib``)
holds a *payload*: a JSON object whose arrays are base64 strings of their raw little-endian
bytes (uint8 codes, float32 ranges). Raw bytes, not PNG, so the browser reads exactly the codes
written here with nothing in between (``js/codec.js`` is the other end).

A payload::

    {"format": 1, "kind": "maps" | "filters" | "map" | "gbp" | "cam" | "diff" | "map_diff",
     "layer": str, "version": int,          # which capture it comes from (differences: "other",
                                            #   the second image's capture, too)
     "first": int, "shape": [n, ...],       # codes of items first .. first + n - 1, or of
     "items": [int, ...],                    #   these items, in this order, when present
     "codes": base64 uint8 (prod(shape) bytes),
     "vmin": base64 float32 (count,), "vmax": base64 float32 (count,),   # every item's range
     "count": int, ...}                     # kind-specific fields (docs/design.md)

Item ``i``'s code ``q`` stands for ``vmin[i] + q * (vmax[i] - vmin[i]) / 254``; 255 is NaN.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from .codes import Codes

__all__ = ["FORMAT", "pack", "payload", "unpack", "unpack_array"]

FORMAT = 1


def pack(array: np.ndarray) -> str:
    """Base64 of an array's raw bytes, little-endian (uint8 as is, floats as float32).

    >>> pack(np.array([1, 2, 255], np.uint8))
    'AQL/'
    """
    a = np.asarray(array)
    if a.dtype.kind == "f":
        a = a.astype("<f4", copy=False)
    elif a.dtype != np.uint8:
        raise TypeError(f"pack: only uint8 codes and float32 values travel, got {a.dtype}")
    return base64.b64encode(np.ascontiguousarray(a).data).decode("ascii")


def unpack_array(text: str, dtype: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """The array :func:`pack` wrote (``dtype`` ``"u1"`` or ``"f4"``)."""
    a = np.frombuffer(base64.b64decode(text), dtype=np.dtype(dtype).newbyteorder("<"))
    return a.reshape(shape) if shape is not None else a


def payload(kind: str, layer: str, version: int, codes: np.ndarray, c: Codes, *, first: int = 0, **extra: Any) -> dict:
    """A data trait's value: ``codes`` of items ``first ..`` with every item's range from ``c``.

    >>> import torch
    >>> from fmwidget.codes import encode
    >>> c = encode(torch.tensor([[0.0, 2.0], [1.0, 5.0]]))
    >>> p = payload("maps", "conv1", 1, c.codes.numpy()[1:], c, first=1)
    >>> p["shape"], unpack(p)["vmax"].tolist()
    ([1, 2], [2.0, 5.0])
    """
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    return {
        "format": FORMAT,
        "kind": kind,
        "layer": layer,
        "version": int(version),
        "first": int(first),
        "shape": [int(s) for s in codes.shape],
        "count": len(c.vmin),
        "codes": pack(codes),
        "vmin": pack(c.vmin),
        "vmax": pack(c.vmax),
        **extra,
    }


def unpack(p: dict) -> dict:
    """A payload with its arrays decoded: ``codes`` (shape ``p["shape"]``), ``vmin``, ``vmax``."""
    out = dict(p)
    out["codes"] = unpack_array(p["codes"], "u1", tuple(p["shape"]))
    out["vmin"] = unpack_array(p["vmin"], "f4")
    out["vmax"] = unpack_array(p["vmax"], "f4")
    return out
