"""What each view shows: which tiles calls build the current picture, and its paging.

The widget decides *when* a picture is needed; this module decides *what* it is. Everything
here is a pure function of the capture, the model's weights and a :class:`GridKey`, which is
why results can be cached and prefetched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from . import tiles
from .capture import Capture, LayerInfo

__all__ = ["GridKey", "IN_PAGE", "n_pages", "resolve_style", "grid_picture", "side_payload"]

IN_PAGE = 64  # input channels per page in the filters view
_AUTO = {"maps": ("channel", "viridis"), "filters": ("symmetric", "bwr"), "side": ("channel", "viridis")}


@dataclass(frozen=True)
class GridKey:
    """Everything a grid picture depends on (the cache key)."""

    version: int
    view: str
    layer: str
    page: int
    page_size: int
    in_page: int
    norm: str
    cmap: str


def resolve_style(view: str, norm: str, cmap: str) -> tuple[str, str]:
    """Resolve ``"auto"`` normalisation and colormap for ``view``."""
    auto_norm, auto_cmap = _AUTO[view]
    return (auto_norm if norm == "auto" else norm, auto_cmap if cmap == "auto" else cmap)


def n_pages(count: int, size: int) -> int:
    return max(1, math.ceil(count / size))


def _page(count: int, size: int, page: int) -> list[int]:
    start = page * size
    return list(range(start, min(count, start + size)))


def filter_rows(info: LayerInfo) -> int:
    """How many output filters (rows) the filters view pages through."""
    return info.weight_shape[0] if info.weight_shape else 0


def filter_cols(info: LayerInfo) -> int:
    """How many input channels (columns) one filter has."""
    return info.weight_shape[1] if info.weight_shape else 0


def grid_picture(cap: Capture, weight: torch.Tensor | None, key: GridKey, *, bgr: bool = False) -> tiles.Picture:
    """Build the grid picture for ``key`` (feature maps or filters of one layer, one page).

    ``bgr`` says the model's input channels are B, G, R (Caffe), for the filters' colour column.
    """
    info = cap.info(key.layer)
    if key.view == "maps":
        channels = _page(info.out_shape[0], key.page_size, key.page)
        # The compact codes and their decoding: tiles decodes only the page it draws.
        pic = tiles.render_maps(
            cap.maps(key.layer), channels, norm=key.norm, cmap=key.cmap, stats=cap.stats(key.layer)
        )
        extra = {"n_pages": n_pages(info.out_shape[0], key.page_size), "n_in_pages": 1}
    elif key.view == "filters":
        if weight is None:
            raise ValueError(
                f"layer {key.layer!r} ({info.type}) has no convolution weight, so there are no "
                f"filters to show; pick a Conv2d layer or the feature-maps view."
            )
        outs = _page(filter_rows(info), key.page_size, key.page)
        if info.depthwise:
            ins = [0]
        else:
            ins = _page(filter_cols(info), IN_PAGE, key.in_page)
        rgb = filter_cols(info) == 3 and not info.depthwise
        pic = tiles.render_filters(
            weight, outs, ins, norm=key.norm, cmap=key.cmap, rgb=rgb, depthwise=info.depthwise,
            bgr=bgr and rgb,
        )
        extra = {
            "n_pages": n_pages(filter_rows(info), key.page_size),
            "n_in_pages": 1 if info.depthwise else n_pages(filter_cols(info), IN_PAGE),
        }
    else:
        raise ValueError(f"view {key.view!r} has no grid picture")
    pic.meta.update({"layer": key.layer, "page": key.page, "in_page": key.in_page, **extra})
    return pic


def side_payload(
    cap: Capture, weight: torch.Tensor | None, layer: str, channel: int, norm: str, cmap: str,
    *,
    bgr: bool = False,
) -> dict:
    """The side-by-side view for one channel: its filter, its map enlarged (full resolution)."""
    info = cap.info(layer)
    stats = cap.stats(layer)
    plane = cap.values(layer, [channel])[0]
    if norm == "layer":
        vmin, vmax = float(np.min(stats["min"])), float(np.max(stats["max"]))
    else:
        vmin, vmax = float(stats["min"][channel]), float(stats["max"][channel])
    m = tiles.render_single(plane, norm=norm, cmap=cmap, vmin=vmin, vmax=vmax, channel=channel)
    payload = {"layer": layer, "channel": channel, "map": {"url": m.url, "meta": m.meta}, "filter": None}
    if weight is not None and channel < filter_rows(info):
        if filter_cols(info) == 3 and not info.depthwise:
            # A first layer: its 3 kernels side by side, after their RGB composite.
            f = tiles.render_filters(weight, [channel], [0, 1, 2], norm="symmetric", cmap="bwr", rgb=True, bgr=bgr)
        else:
            # Every input channel's kernel of this one filter, on a near-square grid with one
            # symmetric scale for the whole filter (a 1 x 512 strip of 3x3 kernels is unreadable).
            kernels = weight[channel]
            f = tiles.render_maps(kernels, list(range(kernels.shape[0])), norm="symmetric", cmap="bwr", max_tile=64)
            f.meta["in_channels"] = list(range(kernels.shape[0]))
        payload["filter"] = {"url": f.url, "meta": f.meta}
    return payload
