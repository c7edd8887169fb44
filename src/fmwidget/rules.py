"""The rules both sides follow, defined once: views, normalisations, colormaps, page sizes, caps.

Python validates the selection traits against these, and :func:`config` sends them to the
browser in one trait (``_config``), so the front end never writes a list of its own.
The colormaps' lookup tables come from the ``cmap`` package.
"""

from __future__ import annotations

import functools

import numpy as np

from . import codec
from .codes import LEVELS, MAX_TILE, NAN_CODE
from .loading import MAX_DOWNLOAD_BYTES as MAX_UPLOAD_BYTES

__all__ = [
    "BROWSER_CACHE_BYTES",
    "CMAPS",
    "GRID_CAP_BYTES",
    "IN_PAGE",
    "NORMS",
    "PAGE_SIZES",
    "VIEWS",
    "config",
    "lut",
    "resolve",
]

VIEWS = {"maps": "Feature maps", "filters": "Filters", "side": "Side by side"}
NORMS = {
    "auto": "auto",
    "channel": "per channel, min to max",
    "channel_symmetric": "per channel, 0 in the middle",
    "layer": "per layer, min to max",
    "symmetric": "per layer, 0 in the middle",
}
# Our names -> (label, name in the cmap package's catalog, gap colour between tiles). Each gap
# colour is absent from its colormap, so tiles never merge into the gaps (white gaps vanished
# into blue-white-red tiles).
CMAPS = {
    "auto": ("auto", None, None),
    "gray": ("gray", "gray", "#3f6fb5"),
    "viridis": ("viridis", "viridis", "#ffffff"),
    "magma": ("magma", "magma", "#3fa7a0"),
    "bwr": ("blue-white-red", "matplotlib:bwr", "#4d4d4d"),
}
CAM_CMAP = ("turbo", "turbo")  # Grad-CAM's own colormap: (our name, catalog name)
NAN_COLOR = "#ff00ff"  # magenta: in none of the colormaps
COMPOSITE_GAP = "#4d4d4d"  # between a first layer's RGB filter composites (grey 0 is #808080)
AUTO = {
    "maps": ("channel", "viridis"),
    "filters": ("channel_symmetric", "bwr"),
    "side": ("channel", "viridis"),
}
RANKINGS = {
    "channel": "channel number",
    "mean": "mean activation",
    "max": "max activation",
    "active": "fraction above zero",
    "contribution": "contribution to the top class",
}
"""The orders the widget's "Sort by" offers ("channel" is the plain order; :mod:`fmwidget.insight`)."""
PAGE_SIZES = (16, 32, 64, 128, 256)
IN_PAGE = 32
"""Input channels per page in the filters view."""
GRID_CAP_BYTES = 1 << 20
"""A layer's maps (or filters) travel in one grid up to this many bytes of codes, page by page
above it."""
BROWSER_CACHE_BYTES = 64 << 20
"""Bytes of decoded grids the browser keeps per widget (least recently used go first)."""
LUT_SIZE = 256


def resolve(view: str, norm: str, cmap: str) -> tuple[str, str]:
    """What ``"auto"`` normalisation and colormap mean in ``view``.

    >>> resolve("filters", "auto", "gray")
    ('channel_symmetric', 'gray')
    """
    auto_norm, auto_cmap = AUTO[view]
    return (auto_norm if norm == "auto" else norm, auto_cmap if cmap == "auto" else cmap)


@functools.cache
def lut(name: str) -> np.ndarray:
    """(256, 3) uint8 RGB lookup table of colormap ``name`` (ours, or ``"turbo"`` for Grad-CAM)."""
    from cmap import Colormap

    catalog = CAM_CMAP[1] if name == CAM_CMAP[0] else CMAPS[name][1]
    rgba = Colormap(catalog).lut(LUT_SIZE)
    return np.round(np.clip(rgba[:, :3], 0.0, 1.0) * 255).astype(np.uint8)


def config() -> dict:
    """Everything the browser needs to know of the rules: the ``_config`` trait."""
    cmaps = []
    for name, (label, catalog, gap) in CMAPS.items():
        entry = {"name": name, "label": label}
        if catalog is not None:
            entry.update(lut=codec.pack(lut(name)), gap=gap)
        cmaps.append(entry)
    return {
        "format": codec.FORMAT,
        "views": [{"name": k, "label": v} for k, v in VIEWS.items()],
        "norms": [{"name": k, "label": v} for k, v in NORMS.items()],
        "cmaps": cmaps,
        "cam_cmap": {"name": CAM_CMAP[0], "lut": codec.pack(lut(CAM_CMAP[0]))},
        "auto": {view: {"norm": n, "cmap": c} for view, (n, c) in AUTO.items()},
        "rankings": [{"name": k, "label": v} for k, v in RANKINGS.items()],
        "max_upload_bytes": MAX_UPLOAD_BYTES,
        "page_sizes": list(PAGE_SIZES),
        "in_page": IN_PAGE,
        "levels": LEVELS,
        "nan_code": NAN_CODE,
        "nan_color": NAN_COLOR,
        "composite_gap": COMPOSITE_GAP,
        "max_tile": MAX_TILE,
        "grid_cap_bytes": GRID_CAP_BYTES,
        "cache_bytes": BROWSER_CACHE_BYTES,
    }
