"""Tests for fmwidget.tiles: decode the PNGs and check every tile against plain numpy."""

import base64
import io
import json
import warnings

import numpy as np
import pytest
import torch
from cmap import Colormap
from PIL import Image

from fmwidget.tiles import (
    LEVELS,
    NAN_INDEX,
    PAD_INDEX,
    encode_rgb,
    render_filters,
    render_maps,
    render_single,
)

TOP = LEVELS - 1
STEP = 0.5 / TOP + 1e-5  # half a colour level: the most rounding may move a value


def decode(url):
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def indices(pic):
    im = decode(pic.url)
    assert im.mode == "P"
    arr = np.asarray(im)
    assert arr.shape == (pic.meta["height"], pic.meta["width"])
    return arr


def cell(arr, meta, k):
    r, c = divmod(k, meta["cols"])
    y, x = r * (meta["tile_h"] + meta["pad"]), c * (meta["tile_w"] + meta["pad"])
    return arr[y : y + meta["tile_h"], x : x + meta["tile_w"]]


def check_levels(idx, expected_t):
    """Palette indices ``idx`` show the fractions ``expected_t`` (0..1) within rounding."""
    assert idx.max() < LEVELS
    np.testing.assert_array_less(np.abs(idx / TOP - expected_t), STEP)


def maps(seed=0, shape=(10, 12, 9)):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32) * 3 + 1


def test_channel_norm_roundtrip_layout_and_palette():
    x = maps()
    channels = [3, 0, 7, 5, 9]
    pic = render_maps(x, channels, norm="channel", cmap="viridis")
    meta = pic.meta
    assert json.loads(json.dumps(meta)) == meta
    assert (meta["kind"], meta["rows"], meta["cols"], meta["scale"]) == (
        "maps",
        2,
        3,
        1,
    )
    assert (meta["tile_h"], meta["tile_w"], meta["pad"]) == (12, 9, 1)
    assert (meta["width"], meta["height"]) == (3 * 9 + 2, 2 * 12 + 1)
    assert meta["channels"] == channels + [-1]
    assert pic.nbytes == len(pic.url)
    arr = indices(pic)
    for k, ch in enumerate(channels):
        lo, hi = x[ch].min(), x[ch].max()
        check_levels(cell(arr, meta, k), (x[ch] - lo) / (hi - lo))
        assert meta["ranges"][k] == pytest.approx([lo, hi], rel=1e-6)
    assert (cell(arr, meta, 5) == PAD_INDEX).all() and meta["ranges"][5] is None
    assert (arr[12, :] == PAD_INDEX).all() and (arr[:, 9] == PAD_INDEX).all()
    assert meta["legend"]["relative"] is True
    assert (meta["legend"]["min"], meta["legend"]["max"]) == (0.0, 1.0)
    im = decode(pic.url)
    palette = np.array(im.getpalette()[: 3 * LEVELS]).reshape(LEVELS, 3)
    ref = np.round(Colormap("viridis").lut(LEVELS)[:, :3] * 255)
    np.testing.assert_array_equal(palette, ref)
    alpha = np.asarray(im.convert("RGBA"))[..., 3]
    assert (alpha[arr == PAD_INDEX] == 0).all() and (
        alpha[arr != PAD_INDEX] == 255
    ).all()


def test_layer_norm_pages_share_scale_from_stats():
    x = maps(1, (6, 5, 5))
    stats = {"min": x.min(axis=(1, 2)), "max": x.max(axis=(1, 2))}
    glo, ghi = x.min(), x.max()
    for page in ([0, 1, 2], [3, 4, 5]):
        pic = render_maps(torch.from_numpy(x), page, norm="layer", stats=stats)
        legend = pic.meta["legend"]
        assert (legend["min"], legend["max"]) == pytest.approx((glo, ghi), rel=1e-6)
        assert legend["relative"] is False
        arr = indices(pic)
        for k, ch in enumerate(page):
            check_levels(cell(arr, pic.meta, k), (x[ch] - glo) / (ghi - glo))
            # decoding through the legend gives back the value within half a level
            idx = cell(arr, pic.meta, k)
            back = legend["min"] + idx / TOP * (legend["max"] - legend["min"])
            assert np.abs(back - x[ch]).max() <= (ghi - glo) * STEP


def test_layer_norm_without_stats_uses_all_channels():
    x = maps(2, (8, 4, 4))
    x[7] *= 10  # the widest channel is not on the page
    pic = render_maps(x, [0, 1], norm="layer")
    assert (pic.meta["legend"]["min"], pic.meta["legend"]["max"]) == pytest.approx(
        (x.min(), x.max()), rel=1e-6
    )
    check_levels(
        cell(indices(pic), pic.meta, 1), (x[1] - x.min()) / (x.max() - x.min())
    )


def test_stats_are_preferred_over_float16_data():
    x = maps(3, (4, 6, 6))
    stats = {"min": x.min(axis=(1, 2)) - 1, "max": x.max(axis=(1, 2)) + 1}
    pic = render_maps(x.astype(np.float16), [2], norm="channel", stats=stats)
    assert pic.meta["ranges"][0] == pytest.approx(
        [stats["min"][2], stats["max"][2]], rel=1e-6
    )
    v = x[2].astype(np.float16).astype(np.float32)
    check_levels(
        indices(pic), (v - stats["min"][2]) / (stats["max"][2] - stats["min"][2])
    )


def test_symmetric_norm_and_zero_in_the_middle():
    x = maps(4, (3, 7, 7))
    x[1, 0, 0] = 0.0
    pic = render_maps(x, [0, 1, 2], norm="symmetric", cmap="bwr")
    s = np.abs(x).max()
    legend = pic.meta["legend"]
    assert (legend["min"], legend["zero"], legend["max"]) == pytest.approx(
        (-s, 0.5, s), rel=1e-6
    )
    arr = indices(pic)
    for k in range(3):
        check_levels(cell(arr, pic.meta, k), 0.5 + x[k] / (2 * s))
    assert cell(arr, pic.meta, 1)[0, 0] == TOP // 2
    palette = np.array(decode(pic.url).getpalette()).reshape(-1, 3)
    assert tuple(palette[TOP // 2]) == (255, 255, 255)  # bwr is white at zero


def test_layer_legend_zero_position():
    x = np.linspace(-1, 3, 2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    assert render_maps(x, [0], norm="layer").meta["legend"]["zero"] == pytest.approx(
        0.25
    )
    assert render_maps(x + 5, [0], norm="layer").meta["legend"]["zero"] is None


def test_legend_colors_match_palette_ends():
    for name, ref in (
        ("gray", "gray"),
        ("viridis", "viridis"),
        ("bwr", "matplotlib:bwr"),
    ):
        colors = render_maps(maps(), [0], cmap=name).meta["legend"]["colors"]
        assert len(colors) == 16 and all(len(c) == 7 and c[0] == "#" for c in colors)
        lut = np.round(Colormap(ref).lut(LEVELS)[:, :3] * 255).astype(int)
        assert colors[0] == "#" + "".join(f"{v:02x}" for v in lut[0])
        assert colors[-1] == "#" + "".join(f"{v:02x}" for v in lut[-1])
    assert (
        render_maps(maps(), [0], cmap="gray").meta["legend"]["colors"][0] == "#000000"
    )


def test_constant_channels_are_flat():
    x = maps(5, (4, 5, 5))
    x[1] = 2.5
    x[2] = 0.0
    arr = indices(render_maps(x, [1, 2], norm="channel"))
    assert (arr[:5, :5] == 0).all() and (arr[:5, 6:] == 0).all()
    flat = np.zeros((3, 4, 4), np.float32)
    for norm, level in (("channel", 0), ("layer", 0), ("symmetric", TOP // 2)):
        pic = render_maps(flat, [0, 1, 2], norm=norm)
        arr = indices(pic)
        assert all((cell(arr, pic.meta, k) == level).all() for k in range(3))
    pic = render_maps(x, [2], norm="symmetric")
    assert (indices(pic) == TOP // 2).all()
    flat[0, 0, 0], flat[0, 0, 1] = np.inf, -np.inf  # a flat layer still clips +-Inf
    for norm, level in (("channel", 0), ("layer", 0), ("symmetric", TOP // 2)):
        tile = cell(
            indices(render_maps(flat, [0, 1], norm=norm)),
            {"cols": 2, "tile_h": 4, "tile_w": 4, "pad": 1},
            0,
        )
        assert (
            tile[0, 0] == TOP and tile[0, 1] == 0 and (tile.ravel()[2:] == level).all()
        )


def test_nan_and_inf_do_not_poison_the_scale():
    x = maps(6, (3, 6, 6))
    x[0, 0, 0], x[0, 0, 1], x[0, 0, 2] = np.nan, np.inf, -np.inf
    x[1] = np.nan
    x[2] = 4.0
    x[2, 1, 1] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pics = {
            n: render_maps(x, [0, 1, 2], norm=n)
            for n in ("channel", "layer", "symmetric")
        }
    finite = np.isfinite(x[0])
    lo, hi = x[0][finite].min(), x[0][finite].max()
    pic = pics["channel"]
    arr = indices(pic)
    tile0 = cell(arr, pic.meta, 0)
    assert (tile0[0, :3] == [NAN_INDEX, TOP, 0]).all()
    check_levels(tile0[finite], (x[0][finite] - lo) / (hi - lo))
    assert pic.meta["ranges"][0] == pytest.approx([lo, hi], rel=1e-6)
    assert (cell(arr, pic.meta, 1) == NAN_INDEX).all() and pic.meta["ranges"][1] is None
    tile2 = cell(arr, pic.meta, 2)
    assert tile2[1, 1] == TOP and (np.delete(tile2.ravel(), 7) == 0).all()
    legend = pics["layer"].meta["legend"]
    assert (legend["min"], legend["max"]) == pytest.approx((lo, max(hi, 4.0)), rel=1e-6)
    s = max(abs(lo), hi, 4.0)
    assert pics["symmetric"].meta["legend"]["max"] == pytest.approx(s, rel=1e-6)
    palette = np.array(decode(pic.url).getpalette()).reshape(-1, 3)
    assert tuple(palette[NAN_INDEX]) == (255, 0, 255)
    assert not (palette[:LEVELS] == (255, 0, 255)).all(axis=1).any()
    assert json.loads(json.dumps(pics["layer"].meta, allow_nan=False))


@pytest.mark.parametrize(
    "make",
    [
        lambda x: torch.from_numpy(x).half(),
        lambda x: x.astype(np.float16),
        lambda x: torch.from_numpy(x).bfloat16(),
        lambda x: torch.from_numpy(x).double(),
    ],
)
def test_low_and_high_precision_inputs(make):
    x = maps(7, (5, 8, 8))
    data = make(x)
    as32 = (
        data.float().numpy()
        if isinstance(data, torch.Tensor)
        else data.astype(np.float32)
    )
    pic = render_maps(data, [4, 2], norm="channel")
    arr = indices(pic)
    for k, ch in enumerate([4, 2]):
        v = as32[ch]
        check_levels(cell(arr, pic.meta, k), (v - v.min()) / (v.max() - v.min()))


def test_input_is_not_modified():
    x = maps(8, (3, 80, 80))
    before = x.copy()
    render_maps(x, [0, 1, 2], norm="symmetric", max_tile=32)
    render_single(x[0], norm="symmetric")
    render_filters(x.reshape(3, 1, 80, 80), [0, 1], [0], norm="layer")
    np.testing.assert_array_equal(x, before)


def test_downsampling_is_integer_area_average():
    x = maps(9, (3, 130, 100))
    pic = render_maps(x, [2, 0], norm="channel", max_tile=64)
    meta = pic.meta
    assert meta["scale"] == 3 and (meta["tile_h"], meta["tile_w"]) == (43, 33)
    arr = indices(pic)
    for k, ch in enumerate([2, 0]):
        small = x[ch, :129, :99].reshape(43, 3, 33, 3).mean(axis=(1, 3))
        lo, hi = x[ch].min(), x[ch].max()  # the full-resolution range sets the scale
        check_levels(cell(arr, meta, k), (small - lo) / (hi - lo))
    small = render_maps(x[:, :64, :50], [0], max_tile=64).meta
    assert small["scale"] == 1 and (small["tile_h"], small["tile_w"]) == (64, 50)


def test_many_channels_layout():
    x = maps(10, (70, 3, 3))
    pic = render_maps(x, range(70), pad=2)
    meta = pic.meta
    assert (meta["rows"], meta["cols"]) == (8, 9)
    assert meta["channels"] == list(range(70)) + [-1, -1]
    assert (meta["width"], meta["height"]) == (9 * 3 + 8 * 2, 8 * 3 + 7 * 2)
    arr = indices(pic)
    for k in (0, 8, 9, 69):
        v = x[k]
        check_levels(cell(arr, meta, k), (v - v.min()) / (v.max() - v.min()))


def weight(shape, seed=11):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_filters_grid_uses_whole_weight_scale():
    w = weight((5, 4, 3, 2))
    w[0] *= 10  # the largest filter is not on the page
    pic = render_filters(w, [4, 1, 2], [3, 0])
    meta = pic.meta
    assert (meta["kind"], meta["rows"], meta["cols"]) == ("filters", 3, 2)
    assert (meta["tile_h"], meta["tile_w"], meta["scale"]) == (3, 2, 1)
    assert meta["in_channels"] == [3, 0] and meta["channels"] == [4, 4, 1, 1, 2, 2]
    assert (meta["norm"], meta["cmap"]) == ("symmetric", "bwr")
    s = np.abs(w).max()
    assert meta["legend"]["max"] == pytest.approx(s, rel=1e-6)
    arr = indices(pic)
    for k, (o, i) in enumerate([(4, 3), (4, 0), (1, 3), (1, 0), (2, 3), (2, 0)]):
        check_levels(cell(arr, meta, k), 0.5 + w[o, i] / (2 * s))
        assert meta["ranges"][k] == pytest.approx(
            [w[o, i].min(), w[o, i].max()], rel=1e-6
        )
    pic = render_filters(w, [1], None, norm="channel", cmap="gray")
    assert pic.meta["in_channels"] == [0, 1, 2, 3]
    tile = cell(indices(pic), pic.meta, 2)
    check_levels(tile, (w[1, 2] - w[1, 2].min()) / (w[1, 2].max() - w[1, 2].min()))


@pytest.mark.parametrize("bgr", [False, True])
def test_filters_rgb_column(bgr):
    w = weight((4, 3, 3, 3))
    w[2, :, 1, 1] = np.nan
    pic = render_filters(torch.from_numpy(w), [0, 2, 3], [0, 1, 2], rgb=True, bgr=bgr)
    meta = pic.meta
    assert (meta["rows"], meta["cols"]) == (3, 4)
    assert meta["in_channels"] == [-1, 0, 1, 2]
    im = decode(pic.url)
    assert im.mode == "RGBA"
    arr = np.asarray(im)
    lut = np.round(Colormap("matplotlib:bwr").lut(LEVELS) * 255).astype(np.uint8)
    finite = w[np.isfinite(w)]
    s = np.abs(finite).max()
    for r, o in enumerate([0, 2, 3]):
        comp = cell(arr, meta, r * 4)
        f = w[o, ::-1] if bgr else w[o]
        so = np.nanmax(np.abs(f))
        expect = np.clip(np.round(128 + 127 * f / so), 0, 255).transpose(1, 2, 0)
        ok = np.isfinite(expect).all(axis=2)
        np.testing.assert_array_equal(comp[..., :3][ok], expect[ok])
        assert (comp[..., 3] == 255).all()
        assert (comp[~ok] == (255, 0, 255, 255)).all()
        for i in range(3):
            tile = cell(arr, meta, r * 4 + 1 + i)
            expected = np.floor(np.clip((0.5 + w[o, i] / (2 * s)) * TOP + 0.5, 0, TOP))
            good = np.isfinite(w[o, i])
            got = tile[good]
            want = lut[expected[good].astype(int)]
            assert (
                np.abs(got.astype(int) - want.astype(int)).max() <= 3
            )  # neighbouring level
            assert (tile[~good] == (255, 0, 255, 255)).all()
    assert (arr[:, 3, 3] == 0).all()  # transparent padding column


def test_filters_depthwise():
    w = weight((5, 1, 3, 3))
    pic = render_filters(w, range(5), None, depthwise=True, norm="layer", cmap="gray")
    meta = pic.meta
    assert (meta["rows"], meta["cols"], meta["depthwise"]) == (2, 3, True)
    assert meta["in_channels"] is None and meta["channels"] == [0, 1, 2, 3, 4, -1]
    arr = indices(pic)
    for k in range(5):
        check_levels(cell(arr, meta, k), (w[k, 0] - w.min()) / (w.max() - w.min()))
    with pytest.raises(ValueError, match="depthwise"):
        render_filters(weight((5, 2, 3, 3)), [0], None, depthwise=True)


def test_render_single_full_resolution():
    x = maps(12, (1, 100, 150))[0]
    pic = render_single(x, norm="layer", cmap="gray", vmin=-20, vmax=20, channel=7)
    meta = pic.meta
    assert (meta["rows"], meta["cols"], meta["width"], meta["height"]) == (
        1,
        1,
        150,
        100,
    )
    assert meta["channels"] == [7] and meta["scale"] == 1
    legend = meta["legend"]
    assert (legend["min"], legend["zero"], legend["max"]) == (-20.0, 0.5, 20.0)
    check_levels(indices(pic), (x + 20) / 40)
    pic = render_single(torch.from_numpy(x).half(), norm="channel")
    v = torch.from_numpy(x).half().float().numpy()
    check_levels(indices(pic), (v - v.min()) / (v.max() - v.min()))
    pic = render_single(x, norm="symmetric", vmin=-1, vmax=4)
    check_levels(indices(pic), np.clip(0.5 + x / 8, 0, 1))


def test_encode_rgb_lossless():
    img = np.random.default_rng(13).integers(0, 256, (17, 23, 3)).astype(np.uint8)
    out = np.asarray(decode(encode_rgb(img)))
    np.testing.assert_array_equal(out, img)
    with pytest.raises(ValueError, match="img"):
        encode_rgb(img.astype(np.float32))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: render_maps(maps(), [0], norm="minmax"), "norm"),
        (lambda: render_maps(maps(), [0], cmap="jet"), "cmap"),
        (lambda: render_maps(maps(), [10]), "channels"),
        (lambda: render_maps(maps(), []), "channels"),
        (lambda: render_maps(maps(), [0.5]), "channels"),
        (lambda: render_maps(maps()[0], [0]), "render_single"),
        (lambda: render_maps(maps(), [0], max_tile=0), "max_tile"),
        (
            lambda: render_maps(
                maps(), [0], stats={"min": np.zeros(3), "max": np.ones(3)}
            ),
            "stats",
        ),
        (lambda: render_filters(weight((4, 5, 3, 3)), [0], [0], rgb=True), "rgb"),
        (lambda: render_filters(weight((4, 5, 3, 3)), [0], [5]), "in_channels"),
        (lambda: render_single(maps()[0], vmin=2, vmax=1), "vmin"),
    ],
)
def test_bad_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_data_type():
    with pytest.raises(TypeError, match="data"):
        render_maps([[[1.0]]], [0])
