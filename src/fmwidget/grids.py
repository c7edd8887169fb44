"""What each answer holds: the payloads of the data traits, from a capture and the weights.

The widget decides *which* answer the selection asks for; this module builds it. Everything
here is a pure function of the capture (or a weight) and the request.

Maps
    A layer's maps travel as one grid of tiles: every channel's map shrunk by one integer
    factor to at most :data:`~fmwidget.codes.MAX_TILE` pixels (:func:`fmwidget.codes.shrink`),
    in channel order, one byte per tile pixel. The whole layer goes at once up to
    :data:`~fmwidget.rules.GRID_CAP_BYTES` of codes; above it, the page the selection shows.
Filters
    The conv weight's codes, each output filter quantised between its own exact min and max,
    whole or, above the cap, the page of output filters the selection shows (with every input
    channel).
Map
    The selected channel at full resolution (the side view).
"""

from __future__ import annotations

import math

import torch

from . import codec, codes, rules
from .capture import Capture, LayerInfo

__all__ = ["cam_payload", "filters_payload", "gbp_payload", "layout", "map_payload", "maps_payload", "nbytes"]


def layout(info: LayerInfo) -> dict:
    """How the layer's data travel, sent to the browser with the layer list (``_layers``).

    ``scale``: the maps' shrink factor; ``tile``: a tile's [height, width]; ``maps_whole`` and
    ``filters_whole``: whether all of the layer's maps (or filters) go in one grid.

    >>> from fmwidget.capture import LayerInfo
    >>> layout(LayerInfo("conv1", "Conv2d", (64, 112, 112), (64, 3, 7, 7)))
    {'scale': 2, 'tile': [56, 56], 'maps_whole': True, 'filters_whole': True}
    """
    C, H, W = info.out_shape
    scale = codes.shrink_factor(H, W)
    th, tw = codes.shrunk_size(H, W, scale)
    filters_bytes = math.prod(info.weight_shape) if info.weight_shape else 0
    return {
        "scale": scale,
        "tile": [th, tw],
        "maps_whole": C * th * tw <= rules.GRID_CAP_BYTES,
        "filters_whole": filters_bytes <= rules.GRID_CAP_BYTES,
    }



def nbytes(info: LayerInfo) -> int:
    """Bytes of codes of the layer's whole maps grid and filters."""
    th, tw = layout(info)["tile"]
    return info.out_shape[0] * th * tw + (math.prod(info.weight_shape) if info.weight_shape else 0)


def _select(c: codes.Codes, items) -> tuple[torch.Tensor, dict]:
    """The codes of ``items`` (a range, or a list of channels) and how the payload names them."""
    if isinstance(items, range):
        return c.codes[items.start : items.stop], {"first": items.start}
    index = torch.as_tensor(list(items), dtype=torch.long)
    return c.codes.index_select(0, index), {"first": int(index[0]) if len(index) else 0, "items": [int(i) for i in index]}


def _codes(source: Capture | codes.Codes, info: LayerInfo) -> codes.Codes:
    return source if isinstance(source, codes.Codes) else source.codes(info.name)


def maps_payload(source: Capture | codes.Codes, info: LayerInfo, version: int, items, *, kind: str = "maps", other: int | None = None) -> dict:
    """The grid of the layer's maps for ``items`` (a range or a list of channels): kind ``"maps"``.

    ``source`` is the capture, or the codes of a difference (kind ``"diff"``, with ``version``
    and ``other`` the two captures, first minus second).
    """
    lay = layout(info)
    c = _codes(source, info)
    picked, where = _select(c, items)
    tiles = codes.shrink(picked, lay["scale"], finite=c.finite)
    extra = {"other": other} if other is not None else {}
    return codec.payload(kind, info.name, version, tiles.numpy(), c, scale=lay["scale"], **where, **extra)


def map_payload(source: Capture | codes.Codes, info: LayerInfo, version: int, channel: int, *, kind: str = "map", other: int | None = None) -> dict:
    """One channel at full resolution: kind ``"map"`` (or ``"map_diff"`` of a difference)."""
    c = _codes(source, info)
    extra = {"other": other} if other is not None else {}
    return codec.payload(kind, info.name, version, c.codes[channel : channel + 1].numpy(), c, first=channel, **extra)


def filters_payload(weight: torch.Tensor, info: LayerInfo, version: int, items: range, *, bgr: bool = False) -> dict:
    """The layer's conv filters ``items`` (a range of output filters): kind ``"filters"``.

    ``bgr`` says the model's input channels are B, G, R (Caffe), for a first layer's colour
    composite.
    """
    c = codes.encode(weight)
    return codec.payload(
        "filters", info.name, version, c.codes[items.start : items.stop].numpy(), c, first=items.start,
        depthwise=info.depthwise, bgr=bool(bgr),
    )


GBP_STD = 5.0
"""Guided backprop is shown from ``mean - GBP_STD * std`` (black) to ``mean + GBP_STD * std``
(white), one mean and std over all three channels (the usual "deprocess" step)."""


def gbp_payload(g: torch.Tensor, layer: str, version: int, channel: int) -> dict:
    """Guided backprop (3, H, W) as codes of the values shown: kind ``"gbp"``.

    The gradient is clipped to the displayed range first, so all 255 levels fall where the
    picture can tell them apart; ``mean`` and ``std`` travel with it.
    """
    g = g.detach().double()
    mean, std = float(g.mean()), float(g.std(unbiased=False))
    shown = g.clamp(mean - GBP_STD * std, mean + GBP_STD * std) if std > 0 else g
    c = codes.encode(shown.float().reshape(1, -1))
    return codec.payload(
        "gbp", layer, version, c.codes.reshape(g.shape).numpy(), c, channel=int(channel),
        mean=mean, std=std, n_std=GBP_STD,
    )


def cam_payload(cam: torch.Tensor, layer: str, version: int, target: int, label: str) -> dict:
    """A Grad-CAM heat map (H, W) in [0, 1] as codes: kind ``"cam"``."""
    c = codes.encode(cam.detach().float()[None])
    return codec.payload("cam", layer, version, c.codes.numpy(), c, target=int(target), label=str(label))
