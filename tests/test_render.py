"""fmwidget.render (codes -> pixels, as the browser draws them) and the colour rules it follows.

Each function is checked against the arithmetic of docs/design.md ("Colours") written out
here directly, in float64 and item by item.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fmwidget import codec, codes, grids, render, rules

NORMS = ["channel", "channel_symmetric", "layer", "symmetric"]
CMAPS = [name for name in rules.CMAPS if name != "auto"]


def _ranges() -> tuple[np.ndarray, np.ndarray]:
    """Items of every kind: signed, positive, negative, constant, zero, undefined (NaN)."""
    vmin = np.array([-2.0, 0.5, -7.25, 3.0, 0.0, np.nan, -1e-3, -0.25], np.float32)
    vmax = np.array([1.5, 4.0, -1.0, 3.0, 0.0, np.nan, 2e-3, 6.5], np.float32)
    return vmin, vmax


def _expected_tables(vmin, vmax, norm, cmap, items=None) -> np.ndarray:
    """docs/design.md, "Colours": item by item, code by code, in float64."""
    lut = rules.lut(cmap)
    nan_rgb = [int(rules.NAN_COLOR[i : i + 2], 16) for i in (1, 3, 5)]
    finite_lo = [float(v) for v in vmin if math.isfinite(v)]
    finite_hi = [float(v) for v in vmax if math.isfinite(v)]
    L0, L1 = (min(finite_lo), max(finite_hi)) if finite_lo else (0.0, 0.0)
    M = max(abs(L0), abs(L1))
    idx = range(len(vmin)) if items is None else items
    out = np.zeros((len(idx), 256, 3), np.uint8)
    for row, i in enumerate(idx):
        lo, hi = float(vmin[i]), float(vmax[i])
        for q in range(255):
            if not math.isfinite(lo):  # no finite values: only +-Inf, at the two ends
                t = q / 254
            else:
                v = lo + q * ((hi - lo) / 254)
                if norm == "channel":
                    t = q / 254
                elif norm == "channel_symmetric":
                    m = max(abs(lo), abs(hi))
                    t = 0.5 + v / (2 * m) if m > 0 else 0.5
                elif norm == "layer":
                    t = (v - L0) / (L1 - L0) if L1 > L0 else 0.0
                else:
                    t = 0.5 + v / (2 * M) if M > 0 else 0.5
            out[row, q] = lut[min(255, max(0, math.floor(t * 255 + 0.5)))]
        out[row, 255] = nan_rgb
    return out


@pytest.mark.parametrize("cmap", CMAPS)
@pytest.mark.parametrize("norm", NORMS)
def test_colour_tables_follow_the_documented_formula(norm, cmap):
    vmin, vmax = _ranges()
    got = render.colour_tables(vmin, vmax, norm, cmap)
    assert got.dtype == np.uint8 and got.shape == (len(vmin), 256, 3)
    assert np.array_equal(got, _expected_tables(vmin, vmax, norm, cmap))


@pytest.mark.parametrize("norm", NORMS)
def test_colour_tables_of_some_items_use_the_whole_layer(norm):
    vmin, vmax = _ranges()
    items = np.array([6, 1, 3])
    got = render.colour_tables(vmin, vmax, norm, "viridis", items)
    assert np.array_equal(got, _expected_tables(vmin, vmax, norm, "viridis", list(items)))
    # layer-wide norms: the same item gets the same table whatever else is built with it
    assert np.array_equal(got[0], render.colour_tables(vmin, vmax, norm, "viridis")[6])


def test_layer_norms_of_a_layer_without_finite_values_or_range():
    nan = np.array([np.nan, np.nan], np.float32)
    for norm in NORMS:
        assert np.array_equal(render.colour_tables(nan, nan, norm, "gray"), _expected_tables(nan, nan, norm, "gray"))
    flat = np.array([2.0, 2.0], np.float32)  # L1 == L0
    assert np.array_equal(render.colour_tables(flat, flat, "layer", "gray"), _expected_tables(flat, flat, "layer", "gray"))
    zero = np.zeros(2, np.float32)  # M == 0
    tables = render.colour_tables(zero, zero, "symmetric", "gray")
    assert (tables[:, :255] == rules.lut("gray")[128]).all()


def test_colour_ends_of_the_channel_norm_are_the_colormap_ends():
    vmin, vmax = np.array([-3.0], np.float32), np.array([5.0], np.float32)
    for cmap in CMAPS:
        table = render.colour_tables(vmin, vmax, "channel", cmap)[0]
        lut = rules.lut(cmap)
        assert (table[0] == lut[0]).all() and (table[254] == lut[255]).all()
        assert (table[255] == render.hex_rgb(rules.NAN_COLOR)).all()


def test_luts_and_gap_colours():
    for cmap in CMAPS:
        lut = rules.lut(cmap)
        assert lut.dtype == np.uint8 and lut.shape == (256, 3)
        gap = render.hex_rgb(rules.CMAPS[cmap][2])
        assert not (lut == gap).all(axis=1).any(), f"{cmap}: the gap colour is in the colormap"
        assert not (lut == render.hex_rgb(rules.NAN_COLOR)).all(axis=1).any()
    assert rules.lut("turbo").shape == (256, 3)  # Grad-CAM's colormap
    assert render.hex_rgb("#3f6fb5").tolist() == [0x3F, 0x6F, 0xB5]


def test_layer_stats():
    vmin, vmax = _ranges()
    assert render.layer_stats(vmin, vmax) == (-7.25, 6.5, 7.25)
    nan = np.array([np.nan], np.float32)
    assert render.layer_stats(nan, nan) == (0.0, 0.0, 0.0)


# ------------------------------------------------------------------------------ layout


def _expected_layout(n, th, tw, avail, gap=2):
    zoom = min(8, max(1, math.ceil(48 / max(th, tw))))
    zoom = max(1, min(zoom, (avail - 2 * gap) // tw))  # limited to the width
    cols = max(1, min(n, (avail - gap) // (tw * zoom + gap)))  # columns fill the width
    rows = math.ceil(n / cols)
    return {"zoom": zoom, "gap": gap, "cols": cols, "rows": rows,
            "width": cols * (tw * zoom + gap) + gap, "height": rows * (th * zoom + gap) + gap}


@pytest.mark.parametrize(
    "n, th, tw, avail",
    [(64, 56, 56, 900), (8, 32, 32, 900), (300, 7, 7, 900), (512, 1, 1, 900), (3, 64, 64, 100),
     (16, 4, 60, 300), (10, 64, 64, 64), (1, 5, 5, 900), (100, 13, 27, 555), (7, 6, 6, 70)],
)
def test_grid_layout_arithmetic(n, th, tw, avail):
    got = render.grid_layout(n, th, tw, avail)
    assert got == _expected_layout(n, th, tw, avail)
    z, gap = got["zoom"], got["gap"]
    assert 1 <= z <= 8 and got["cols"] * got["rows"] >= n > (got["rows"] - 1) * got["cols"]
    if tw + 2 * gap <= avail:
        assert got["width"] <= avail  # the grid fits the width
        if got["cols"] < n:  # one more column would not fit
            assert (got["cols"] + 1) * (tw * z + gap) + gap > avail
    if max(th, tw) * z < 48 and z < 8:  # enlarged as far as the width allows
        assert tw * (z + 1) > avail - 2 * gap


def test_grid_layout_with_fixed_columns():
    got = render.grid_layout(6 * 32, 3, 3, 900, cols=32, gap=1)
    assert (got["cols"], got["rows"], got["gap"]) == (32, 6, 1)
    assert got["zoom"] == min(8, math.ceil(48 / 3), (900 - 33) // (32 * 3))
    assert got["width"] == 32 * (3 * got["zoom"] + 1) + 1 <= 900
    assert got["height"] == 6 * (3 * got["zoom"] + 1) + 1


def test_draw_grid_places_enlarged_tiles_row_major_in_the_gap_colour():
    """Tiles enlarged ``zoom`` times, row-major, with ``gap`` pixels of the gap colour between
    and round them; after the last tile the grid's background (white), as in the browser."""
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (5, 3, 4), dtype=np.uint8)
    tables = rng.integers(0, 256, (5, 256, 3), dtype=np.uint8)
    layout = {"zoom": 2, "gap": 2, "cols": 2, "rows": 3, "width": 2 * (8 + 2) + 2, "height": 3 * (6 + 2) + 2}
    gap = np.array([1, 2, 3], np.uint8)
    got = render.draw_grid(tiles, tables, layout, gap)
    expected = np.empty((layout["height"], layout["width"], 3), np.uint8)
    expected[:] = gap
    # the cells after the last tile (row 2, column 1), with the gaps round them, are background
    expected[2 + 2 * 8 - 2 :, 2 + 10 - 2 :] = 255
    for i in range(5):
        r, c = divmod(i, 2)
        for y in range(3):
            for x in range(4):
                top, left = 2 + r * 8 + 2 * y, 2 + c * 10 + 2 * x
                expected[top : top + 2, left : left + 2] = tables[i, tiles[i, y, x]]
    assert np.array_equal(got, expected)
    rgb = tables[np.arange(5)[:, None, None], tiles]  # (n, th, tw, 3) pictures drawn as they are
    assert np.array_equal(render.draw_grid(rgb, None, layout, gap), expected)
    full = {**layout, "rows": 3, "cols": 2}
    six = np.concatenate([tiles, tiles[:1]])
    got = render.draw_grid(six, np.concatenate([tables, tables[:1]]), full, gap)
    assert (got[:2] == gap).all() and (got[:, -2:] == gap).all() and (got[-2:] == gap).all()  # no empty cell


def test_plane_image():
    codes_ = np.array([[0, 1], [2, 255]], np.uint8)
    table = np.arange(256 * 3, dtype=np.int64).reshape(256, 3).astype(np.uint8)
    got = render.plane_image(codes_, table, 3)
    assert got.shape == (6, 6, 3)
    assert (got[3:, 3:] == table[255]).all() and (got[:3, 3:] == table[1]).all()


# ------------------------------------------------------------------------------ composite


def _expected_composite(q, vmin, vmax):
    """clamp(floor(128 + 127 v / s + 0.5)) per input channel, s the filter's largest |w|."""
    n = q.shape[0]
    out = np.zeros(q.shape, np.int64)
    for i in range(n):
        lo, hi = float(vmin[i]), float(vmax[i])
        s = max(abs(lo), abs(hi))
        v = lo + q[i].astype(np.float64) * ((hi - lo) / 254)
        out[i] = np.clip(np.floor(128 + 127 * v / s + 0.5), 0, 255) if s > 0 else 128
    return out


@pytest.mark.parametrize("bgr", [False, True])
def test_first_layer_composite(bgr):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 3, 5, 5, generator=g)
    w[4] = 0.0  # a zero filter is mid-grey
    w[5] = w[5].abs()  # positive only
    c = codes.encode(w)
    q = c.codes.numpy()
    got = render.composite(q, c.vmin, c.vmax, bgr=bgr)
    assert got.dtype == np.uint8 and got.shape == (6, 5, 5, 3)
    px = _expected_composite(q, c.vmin, c.vmax)
    for k in range(3):
        source = 2 - k if bgr else k  # B, G, R inputs are shown as R, G, B
        assert np.array_equal(got[..., k], px[:, source]), k
    assert (got[4] == 128).all()


def test_composite_marks_nan_weights():
    w = torch.randn(2, 3, 3, 3)
    w[1, 2, 0, 0] = float("nan")
    c = codes.encode(w)
    got = render.composite(c.codes.numpy(), c.vmin, c.vmax)
    assert (got[1, 0, 0] == render.hex_rgb(rules.NAN_COLOR)).all()
    assert not (got[0] == render.hex_rgb(rules.NAN_COLOR)).all(axis=-1).any()


def test_guided_backprop_picture():
    g = torch.Generator().manual_seed(0)
    grad = torch.randn(3, 8, 9, generator=g) * 1e-3
    grad[0, 0, 0] = 1.0  # an outlier: clipped to mean + 5 std
    p = grids.gbp_payload(grad, "conv1", 1, 0)
    u = codec.unpack(p)
    got = render.gbp_image(u)
    assert got.shape == (8, 9, 3) and got.dtype == np.uint8
    lo, hi = float(u["vmin"][0]), float(u["vmax"][0])
    v = lo + u["codes"].astype(np.float64) * ((hi - lo) / 254)
    t = np.clip(0.5 + (v - p["mean"]) / (2 * p["n_std"] * p["std"]), 0, 1)
    assert np.array_equal(got, np.floor(t * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0))
    g64 = grad.double()
    assert p["mean"] == pytest.approx(float(g64.mean())) and p["std"] == pytest.approx(float(g64.std(unbiased=False)))
    assert hi <= p["mean"] + p["n_std"] * p["std"] + 1e-6  # the outlier was clipped
