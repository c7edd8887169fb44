"""The Python renderer: codes to pixels, exactly as the browser draws them (``js/colors.js``,
``js/layout.js``), for :meth:`FeatureMapExplorer.save_png` and the README's pictures.

Colours
    Every item (a channel, or an output filter) gets a 256-entry table from its code to a
    colour. The code's value ``v = vmin + q * (vmax - vmin) / 254`` becomes a position ``t``
    along the colormap, in float64 in the same operation order as the browser:

    ``channel``            ``t = q / 254`` (each item from its own min to max; with a shared
                           scale ``(v - slo) / (shi - slo)``)
    ``channel_symmetric``  ``t = 0.5 + v / (2 m)``, ``m = max(|vmin|, |vmax|)`` of the item
    ``layer``              ``t = (v - L0) / (L1 - L0)``, the layer's min and max
    ``symmetric``          ``t = 0.5 + v / (2 M)``, ``M`` the layer's largest ``|value|``

    and the colour is ``lut[clamp(floor(t * 255 + 0.5), 0, 255)]``. NaN (code 255) is magenta.
Layout
    Tiles are enlarged by an integer zoom (at least 48 screen pixels for small maps, at most 8x,
    no wider than the space) and laid out row-major with gaps of a colour absent from the
    colormap: :func:`grid_layout`.
"""

from __future__ import annotations

import math

import numpy as np

from . import rules
from .codes import LEVELS, NAN_CODE

__all__ = ["colour_tables", "composite", "draw_grid", "gbp_image", "grid_layout", "hex_rgb", "layer_stats", "plane_image", "shared_scale"]

MIN_TILE_PX = 48
MAX_ZOOM = 8
GAP = 2


def hex_rgb(color: str) -> np.ndarray:
    """``"#rrggbb"`` as a uint8 RGB triple."""
    return np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)], np.uint8)


def layer_stats(vmin: np.ndarray, vmax: np.ndarray) -> tuple[float, float, float]:
    """(L0, L1, M): the layer's min, max and largest magnitude, over its finite ranges."""
    lo = vmin[np.isfinite(vmin)].astype(np.float64)
    hi = vmax[np.isfinite(vmax)].astype(np.float64)
    if not lo.size:
        return 0.0, 0.0, 0.0
    low, high = float(lo.min()), float(hi.max())
    return low, high, max(abs(low), abs(high))


def colour_tables(
    vmin: np.ndarray, vmax: np.ndarray, norm: str, cmap: str, items: np.ndarray | None = None,
    scale: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """(n, 256, 3) uint8: for each item, its code's colour (see the module docstring).

    ``vmin`` and ``vmax`` hold every item of the layer (the layer-wide norms need all);
    ``items`` picks the ones to build (default all). ``scale``, a pair like ``(vmin, vmax)``,
    normalises with other ranges than the codes' own: two images compared on one scale.
    With it, ``channel`` is ``t = (v - slo) / (shi - slo)`` (0 when ``shi <= slo``).
    """
    lut = rules.lut(cmap)
    idx = np.arange(len(vmin)) if items is None else np.asarray(items)
    lo = vmin[idx].astype(np.float64)[:, None]
    hi = vmax[idx].astype(np.float64)[:, None]
    slo, shi = (lo, hi) if scale is None else (scale[0][idx].astype(np.float64)[:, None], scale[1][idx].astype(np.float64)[:, None])
    q = np.arange(LEVELS + 1, dtype=np.float64)[None, :]
    step = (hi - lo) / LEVELS
    v = lo + q * step
    with np.errstate(invalid="ignore", divide="ignore"):
        if norm == "channel" and scale is None:
            t = np.broadcast_to(q / LEVELS, v.shape)
        elif norm == "channel":
            t = np.where(shi > slo, (v - slo) / (shi - slo), 0.0)
        elif norm == "channel_symmetric":
            m = np.maximum(np.abs(slo), np.abs(shi))
            t = np.where(m > 0, 0.5 + v / (2 * m), 0.5)
        else:
            low, high, big = layer_stats(*(scale if scale is not None else (vmin, vmax)))
            if norm == "layer":
                t = (v - low) / (high - low) if high > low else np.zeros_like(v)
            else:
                t = 0.5 + v / (2 * big) if big > 0 else np.full_like(v, 0.5)
        # an item without finite values keeps only its infinities, at the two ends
        t = np.where(np.isfinite(lo), t, q / LEVELS)
        index = np.clip(np.floor(t * 255 + 0.5), 0, 255).astype(np.intp)
    tables = np.empty((len(idx), 256, 3), np.uint8)
    tables[:, : LEVELS + 1] = lut[index]
    tables[:, NAN_CODE] = hex_rgb(rules.NAN_COLOR)
    return tables


def shared_scale(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One scale for two images' ranges: per item, the lower minimum and the higher maximum."""
    return np.fmin(a[0], b[0]), np.fmax(a[1], b[1])


def grid_layout(n: int, th: int, tw: int, avail: int, *, cols: int | None = None, gap: int = GAP) -> dict:
    """Where ``n`` tiles of ``th`` x ``tw`` go in ``avail`` pixels of width.

    ``zoom``: the integer enlargement; ``cols``/``rows``; ``width``/``height`` of the whole
    grid, gaps included (a gap also runs round the outside, so an outline is never clipped).
    ``cols`` fixes the number of columns (a filter's input channels).

    >>> grid_layout(64, 56, 56, 900)
    {'zoom': 1, 'gap': 2, 'cols': 15, 'rows': 5, 'width': 872, 'height': 292}
    """
    zoom = min(MAX_ZOOM, max(1, math.ceil(MIN_TILE_PX / max(th, tw, 1))))
    if cols is None:
        zoom = max(1, min(zoom, (avail - 2 * gap) // max(tw, 1)))
        cols = max(1, min(n, (avail - gap) // (tw * zoom + gap)))
    else:
        zoom = max(1, min(zoom, (avail - gap * (cols + 1)) // max(cols * tw, 1)))
    rows = max(1, -(-n // cols))
    return {
        "zoom": zoom, "gap": gap, "cols": cols, "rows": rows,
        "width": cols * (tw * zoom + gap) + gap, "height": rows * (th * zoom + gap) + gap,
    }


def draw_grid(tiles: np.ndarray, tables: np.ndarray, layout: dict, gap_rgb: np.ndarray) -> np.ndarray:
    """Colour ``tiles`` (n, th, tw) codes with their ``tables`` (n, 256, 3); lay them out.

    ``tiles`` may instead be (n, th, tw, 3) RGB already.
    """
    n, th, tw = tiles.shape[:3]
    z, gap, cols = layout["zoom"], layout["gap"], layout["cols"]
    out = np.empty((layout["height"], layout["width"], 3), np.uint8)
    out[:] = gap_rgb
    if tiles.ndim == 3:
        rgb = tables[np.arange(n)[:, None, None], tiles]
    else:
        rgb = tiles
    big = rgb.repeat(z, axis=1).repeat(z, axis=2)
    first_empty = n % cols
    if first_empty:  # the cells after the last tile are background, as in the browser
        y = gap + (n // cols) * (th * z + gap) - gap
        out[y:, gap + first_empty * (tw * z + gap) - gap :] = 255
    for i in range(n):
        row, col = divmod(i, cols)
        y, x = gap + row * (th * z + gap), gap + col * (tw * z + gap)
        out[y : y + th * z, x : x + tw * z] = big[i]
    return out


def plane_image(codes: np.ndarray, table: np.ndarray, zoom: int) -> np.ndarray:
    """One (H, W) plane of codes, coloured by ``table`` (256, 3), enlarged by ``zoom``."""
    return table[codes].repeat(zoom, axis=0).repeat(zoom, axis=1)


def composite(codes: np.ndarray, vmin: np.ndarray, vmax: np.ndarray, bgr: bool = False) -> np.ndarray:
    """First-layer filters (n, 3, kh, kw) as RGB pictures (n, kh, kw, 3).

    Each filter is scaled round mid-grey by its own largest ``|w|``: ``128 + 127 w / s``;
    with ``bgr`` the input channels are B, G, R and are shown flipped back.
    """
    lo = vmin.astype(np.float64)[:, None, None, None]
    hi = vmax.astype(np.float64)[:, None, None, None]
    v = lo + codes.astype(np.float64) * ((hi - lo) / LEVELS)
    s = np.maximum(np.abs(lo), np.abs(hi))
    with np.errstate(invalid="ignore", divide="ignore"):
        px = np.where(s > 0, np.floor(128 + 127 * v / s + 0.5), 128)
    px = np.clip(np.nan_to_num(px, nan=128), 0, 255).astype(np.uint8)
    if bgr:
        px = px[:, ::-1]
    rgb = px.transpose(0, 2, 3, 1).copy()
    rgb[(codes == NAN_CODE).any(axis=1)] = hex_rgb(rules.NAN_COLOR)
    return rgb


def gbp_image(p: dict) -> np.ndarray:
    """A guided-backprop payload (unpacked) as the (H, W, 3) picture the browser shows."""
    lo, hi = float(p["vmin"][0]), float(p["vmax"][0])
    v = lo + p["codes"].astype(np.float64) * ((hi - lo) / LEVELS)
    if p["std"] > 0:
        t = np.clip(0.5 + (v - p["mean"]) / (2 * p["n_std"] * p["std"]), 0, 1)
        px = np.floor(t * 255 + 0.5).astype(np.uint8)
    else:
        px = np.full(v.shape, 128, np.uint8)
    return px.transpose(1, 2, 0).copy()
