"""Where a scan's images come from: a folder, a list, a Dataset or any iterable.

:func:`open_source` turns the ``source`` argument of :func:`fmwidget.scan.scan` into a
:class:`Source` that yields the raw items in order and, when the source can be indexed, reads
one again (for patches). :func:`unpack_item` and :func:`load_item` turn an item into a model
input, with errors that name ``source[i]`` and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .preprocess import model_input

__all__ = ["IMAGE_EXTENSIONS", "Source", "load_item", "open_source", "unpack_item"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
"""File extensions a folder source is searched for (case-insensitive)."""


class Source:
    """Where the images come from: ``iterate()`` yields the raw items in index order; ``get(i)``
    re-reads item ``i`` (None for a one-shot iterable); ``paths`` are a folder's files."""

    def __init__(
        self,
        iterate: Callable[[], Iterator[Any]],
        total: int | None,
        paths: list[str] | None,
        get: Callable[[int], Any] | None,
        kind: str,
        fix: str,
    ) -> None:
        self.iterate, self.total, self.paths, self.get = iterate, total, paths, get
        self.kind, self.fix = kind, fix
        # Items of datasets and iterables may be (image, label) pairs or, wrongly, labels.
        self.labels_possible = kind not in ("folder", "list", "tuple", "batch")


def open_source(source: Any) -> Source:
    if source is None:
        raise TypeError(
            "source is None: pass a folder path, a list of images, or a Dataset / iterable of "
            "images or (image, label) pairs."
        )
    if isinstance(source, (str, os.PathLike)):
        return _folder(source)
    if isinstance(source, (list, tuple)):
        if not source:
            raise ValueError(f"source is an empty {type(source).__name__}: pass at least one image.")
        items = source
        return Source(lambda: iter(items), len(items), None, items.__getitem__,
                       type(source).__name__, f"remove it from the {type(source).__name__} or fix "
                       f"it, then scan again")
    if isinstance(source, (torch.Tensor, np.ndarray)):
        if source.ndim != 4:
            raise TypeError(
                f"source is a {source.ndim}-D {type(source).__name__} of shape "
                f"{tuple(source.shape)}; pass a batch of images (N, 3, H, W) (or (N, H, W, 3)), "
                f"or one image as a list: [img]."
            )
        if len(source) == 0:
            raise ValueError(
                f"source is an empty batch of shape {tuple(source.shape)}: pass at least one image."
            )
        batch = source
        return Source(lambda: (batch[i] for i in range(len(batch))), len(batch), None,
                       batch.__getitem__, "batch", "fix that image, then scan again")
    if isinstance(source, (dict, set, frozenset, bytes, bytearray, Image.Image)):
        one = isinstance(source, (Image.Image, bytes, bytearray))
        what = "one image" if one else f"a {type(source).__name__}"
        raise TypeError(
            f"source is {what}; pass a folder path, a list of images (e.g. [img]), or a "
            f"Dataset / iterable of images or (image, label) pairs."
        )
    fix = ("make it yield images (PIL image, array, tensor, file path) or (image, label) pairs, "
           "or fix that item, then scan again")
    length = _len(source)
    if length is not None and callable(getattr(source, "__getitem__", None)) and not isinstance(
        source, torch.utils.data.IterableDataset
    ):
        if length == 0:
            raise ValueError(
                f"source: the {type(source).__name__} is empty (len 0); pass one with images."
            )
        data = source
        return Source(lambda: (data[i] for i in range(length)), length, None, data.__getitem__,
                       type(source).__name__, fix)
    if not callable(getattr(source, "__iter__", None)) and not callable(
        getattr(source, "__getitem__", None)  # iter() falls back to __getitem__(0, 1, ...)
    ):
        raise TypeError(
            f"source has unsupported type {type(source).__module__}.{type(source).__qualname__}; "
            f"pass a folder path, a list of images, or a Dataset / iterable of images or "
            f"(image, label) pairs."
        )
    return Source(lambda: iter(source), length, None, None, type(source).__name__, fix)


def _len(obj: Any) -> int | None:
    try:
        n = len(obj)
    except Exception:  # no __len__, or an IterableDataset without one: unknown total
        return None
    return int(n) if isinstance(n, (int, np.integer)) and n >= 0 else None


def _folder(source: str | os.PathLike) -> Source:
    text = os.fspath(source)
    root = Path(text).expanduser()
    if not root.exists():
        where = "" if root.is_absolute() else f" (relative to the working directory {os.getcwd()})"
        raise FileNotFoundError(
            f"source: no folder at {text!r}{where}. Check the spelling and location, or pass a "
            f"list of images."
        )
    if not root.is_dir():
        raise ValueError(
            f"source: {text!r} is a file, not a folder; pass the folder that holds the images, "
            f"or a list of images, e.g. [{text!r}]."
        )
    images: list[str] = []
    others: list[str] = []
    folders = 0
    # os.walk rather than Path.rglob: it lets hidden folders be pruned (.ipynb_checkpoints,
    # .git) and does not follow symbolic links to folders (no cycles).
    for here, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        folders += len(dirs)
        for name in files:
            if name.startswith("."):  # .DS_Store, macOS "._x.jpg" resource forks
                continue
            path = os.path.join(here, name)
            if name.lower().endswith(IMAGE_EXTENSIONS):
                images.append(path)
            else:
                others.append(os.path.relpath(path, root))
    if not images:
        if not others:
            sub = f" (only {folders} empty subfolder{'s' * (folders != 1)})" if folders else ""
            raise ValueError(
                f"source: the folder {text!r} is empty{sub}; put image files ("
                f"{', '.join(IMAGE_EXTENSIONS)}) in it or pass another folder."
            )
        shown = ", ".join(repr(o) for o in sorted(others)[:8]) + (", ..." if len(others) > 8 else "")
        raise ValueError(
            f"source: the folder {text!r} has no image files (searched it and its subfolders "
            f"for {', '.join(IMAGE_EXTENSIONS)}, any case); it holds {len(others)} other "
            f"file{'s' * (len(others) != 1)}: {shown}. Pass the folder that holds the images, "
            f"or convert them to PNG or JPEG."
        )
    # Sorted by the path below the folder, so the indices do not depend on os.walk's order.
    images.sort(key=lambda p: Path(p).relative_to(root).as_posix())
    return Source(lambda: iter(images), len(images), images, images.__getitem__,
                   "folder", "remove or replace that file in the folder, then scan again")


def unpack_item(item: Any, index: int) -> Any:
    """The image of a dataset item: the item, or the first element of an (image, label) pair."""
    if isinstance(item, (tuple, list)) and len(item) >= 2 and not isinstance(
        item[0], (int, float, list, tuple)
    ):
        return item[0]
    if isinstance(item, dict):
        keys = ", ".join(repr(k) for k in list(item)[:6])
        raise TypeError(
            f"source[{index}] is a dict (keys {keys}), not an image: the source must yield images "
            f"or (image, label) pairs. Map it first, e.g. (d['image'] for d in dataset), or make "
            f"__getitem__ return (image, label)."
        )
    return item


def load_item(raw: Any, index: int, transform: Callable | None, src: Source, *, scanning: bool = True) -> torch.Tensor:
    """Preprocess one item into a ``(1, 3, H, W)`` float32 CPU tensor; errors name the item
    (and, while ``scanning``, say that the scan stopped there)."""
    argname = f"source[{index}]"
    if src.labels_possible and isinstance(raw, str) and "://" not in raw[:16] \
            and raw[:5].lower() != "data:" and not Path(raw).expanduser().exists():
        # A dataset that yields a label (or a wrong path) where the image should be.
        raise ValueError(
            f"{argname} is the string {raw[:100]!r}, which is neither an image nor the path of "
            f"an existing file: the source must yield images (PIL image, array, tensor, file "
            f"path) or (image, label) pairs, not labels alone; {src.fix}."
        )
    try:
        return model_input(raw, transform, argname=argname)
    except (TypeError, ValueError, OSError) as err:
        if not scanning:  # re-read after the scan (a patch): the plain error
            raise
        message = f"{err} [The scan stopped at {argname} and kept nothing: {src.fix}.]"
        kind = type(err) if type(err) in _REBUILDABLE else (
            TypeError if isinstance(err, TypeError) else ValueError
        )
        raise kind(message) from err


_REBUILDABLE = (TypeError, ValueError, OSError, FileNotFoundError, IsADirectoryError,
                PermissionError, ConnectionError)
