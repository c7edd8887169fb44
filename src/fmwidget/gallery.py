"""The explorer's images: the loaded inputs, in order, and a bounded cache of their captures.

Adding an image loads and preprocesses it (the checks and errors of ``img``) but runs nothing;
the model runs once when an image is first shown, and its capture is kept while it is one of
the :data:`KEEP` most recently used (and all of them hold at most :data:`KEEP_BYTES` of codes).
Every capture gets a new *version*: the browser caches grids by it.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from . import capture, export, loading, preprocess

__all__ = ["KEEP", "KEEP_BYTES", "Gallery", "Item"]

KEEP = 4
"""Captures kept (the most recently shown images); older ones are run again when shown."""
KEEP_BYTES = 1 << 30
"""Bytes of codes all kept captures may hold together (the images shown are always kept)."""
THUMB_PX = 72


@dataclass
class Item:
    """One image: as loaded (RGB PIL image, or a model-input tensor), its model input, a label."""

    image: Any
    x: torch.Tensor
    label: str
    thumb: str | None = None  # a small PNG data URL, made when the strip first shows it


def _label(img: Any, index: int, name: str | None) -> str:
    if name:
        return name
    if isinstance(img, (str, os.PathLike)) and not str(img).startswith(("data:", "http://", "https://")):
        return os.path.basename(os.fspath(img)) or f"image {index}"
    return f"image {index}"


class Gallery:
    """The images of one explorer and the captures of the recently shown ones.

    Parameters
    ----------
    model, transform, layers, device
        As given to :class:`fmwidget.FeatureMapExplorer` (resolved).
    """

    def __init__(self, model: torch.nn.Module, transform: Any, layers: Any, device: Any) -> None:
        self.model, self.transform, self.layers, self.device = model, transform, layers, device
        self.items: list[Item] = []
        self._captures: OrderedDict[int, tuple[int, capture.Capture]] = OrderedDict()
        self._version = 0

    def __len__(self) -> int:
        return len(self.items)

    def load(self, img: Any, *, argname: str = "img", name: str | None = None, index: int | None = None) -> Item:
        """Load and preprocess ``img`` (every check of ``img``); nothing is added or run.

        ``index`` is the place it will take (for its default label; default: a new one).
        """
        loaded = loading.load_image(img, argname=argname)
        x = preprocess.model_input(loaded, self.transform, argname=argname)
        return Item(loaded, x, _label(img, len(self.items) if index is None else index, name))

    def add(self, item: Item) -> int:
        """Append a loaded image; return its index."""
        self.items.append(item)
        return len(self.items) - 1

    def remove_last(self) -> None:
        """Take back the image just added (its capture failed)."""
        self._captures.pop(len(self.items) - 1, None)
        self.items.pop()

    def replace(self, index: int, item: Item, cap: capture.Capture, protect=()) -> int:
        """Put ``item`` (with its capture, already run) at ``index``; return the new version."""
        self.items[index] = item
        old = self._captures.pop(index, None)
        if old is not None:
            old[1].clear()
        return self._keep(index, cap, protect)

    def capture(self, index: int, protect=()) -> tuple[int, capture.Capture]:
        """(version, capture) of image ``index``: kept, or run now (the model runs once).

        The captures of ``protect`` (the images shown) are never the ones dropped to make room.
        """
        if index in self._captures:
            self._captures.move_to_end(index)
            return self._captures[index]
        cap = self.run(self.items[index].x)
        return self._keep(index, cap, protect), cap

    def run(self, x: torch.Tensor) -> capture.Capture:
        """Capture the model on input ``x`` (nothing kept)."""
        return capture.capture(self.model, x, self.layers, device=self.device)

    def _keep(self, index: int, cap: capture.Capture, protect=()) -> int:
        self._version += 1
        self._captures[index] = (self._version, cap)
        self._captures.move_to_end(index)
        keep = {index, *protect}
        while True:
            if len(self._captures) <= KEEP and sum(c.nbytes for _, c in self._captures.values()) <= KEEP_BYTES:
                break
            drop = next((i for i in self._captures if i not in keep), None)  # least recently used first
            if drop is None:
                break
            self._captures.pop(drop)[1].clear()
        return self._version

    def version(self, index: int) -> int | None:
        """The version of image ``index``'s kept capture, or None when it is not kept."""
        kept = self._captures.get(index)
        return kept[0] if kept else None

    def thumbnail(self, index: int) -> str:
        """A small PNG data URL of image ``index`` as the model saw it."""
        img = Image.fromarray(preprocess.display_image(self.items[index].x, self.transform))
        img.thumbnail((THUMB_PX, THUMB_PX))
        return export.png_data_url(img)

    def clear(self) -> None:
        """Free every kept capture and the images."""
        for _, cap in self._captures.values():
            cap.clear()
        self._captures.clear()
        self.items.clear()
