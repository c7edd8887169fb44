"""fmwidget.codes (uint8 codes with exact float32 ranges, shrinking) and fmwidget.codec (the wire).

Every result is checked against an independent computation written here: numpy float64 for
ranges, decoding and area means, a float32 numpy reference of ``trunc(x * gain + base)`` for the
codes themselves, and raw little-endian bytes for the wire.
"""

from __future__ import annotations

import base64
import json
import math

import numpy as np
import pytest
import torch

from fmwidget import codec, codes

F32 = np.float32
EPS32 = float(np.finfo(np.float32).eps)


def _channels(shape, seed=0) -> torch.Tensor:
    """Random channels, each with its own scale and offset (1e-3 .. 1e3), of any shape."""
    g = torch.Generator().manual_seed(seed)
    C = shape[0]
    x = torch.randn(shape, generator=g)
    scale = torch.logspace(-3, 3, C).reshape((C,) + (1,) * (len(shape) - 1))
    offset = torch.linspace(-2, 2, C).reshape(scale.shape) * scale
    return (x * scale + offset).float()


def _finite_range(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel float32 min and max over the finite values, NaN where there are none."""
    flat = a.reshape(a.shape[0], -1)
    lo = np.full(a.shape[0], np.nan, np.float32)
    hi = np.full(a.shape[0], np.nan, np.float32)
    for i, row in enumerate(flat):
        ok = row[np.isfinite(row)]
        if ok.size:
            lo[i], hi[i] = ok.min(), ok.max()
    return lo, hi


def _assert_within_half_step(c: codes.Codes, x: torch.Tensor) -> None:
    """Decoded values are within half a step, (vmax - vmin) / 508, of ``x``, per channel.

    Decoding is float32 arithmetic, so a few float32 roundings of the value itself are allowed.
    """
    got = codes.decode(c).double().numpy()
    ref = x.double().numpy()
    C = ref.shape[0]
    shape = (C,) + (1,) * (ref.ndim - 1)
    lo, hi = c.vmin.astype(np.float64).reshape(shape), c.vmax.astype(np.float64).reshape(shape)
    half = (hi - lo) / 508
    tol = half * (1 + 1e-6) + 4 * EPS32 * np.maximum(np.abs(lo), np.abs(hi))
    ok = np.isfinite(ref)
    err = np.abs(got - ref)
    assert bool((err <= tol)[ok].all()), float(np.max(np.where(ok, err / np.maximum(tol, 1e-300), 0)))


# --------------------------------------------------------------------------------- encode


@pytest.mark.parametrize("shape", [(5,), (4, 7), (3, 9, 11), (2, 3, 4, 5), (6, 1, 1), (1, 13, 2)])
def test_round_trip_within_half_a_step_for_any_trailing_shape(shape):
    x = _channels(shape)
    c = codes.encode(x)
    assert c.codes.dtype == torch.uint8 and tuple(c.codes.shape) == shape
    assert c.codes.device.type == "cpu"
    assert c.vmin.dtype == np.float32 and c.vmax.dtype == np.float32
    assert c.vmin.shape == c.vmax.shape == (shape[0],)
    assert c.finite is True
    assert int(c.codes.max()) <= codes.LEVELS  # 255 is reserved for NaN
    _assert_within_half_step(c, x)
    # The extremes of every channel are exactly codes 0 and 254.
    flat = c.codes.reshape(shape[0], -1)
    multi = x.reshape(shape[0], -1).amax(1) > x.reshape(shape[0], -1).amin(1)
    assert torch.equal(flat.amin(1)[multi], torch.zeros(int(multi.sum()), dtype=torch.uint8))
    assert torch.equal(flat.amax(1)[multi], torch.full((int(multi.sum()),), 254, dtype=torch.uint8))


def test_decode_is_the_documented_linear_formula():
    x = _channels((4, 6, 5), seed=3)
    c = codes.encode(x)
    q = c.codes.double().numpy()
    lo, hi = c.vmin.astype(np.float64)[:, None, None], c.vmax.astype(np.float64)[:, None, None]
    expected = lo + q * (hi - lo) / 254
    got = codes.decode(c).double().numpy()
    tol = 4 * EPS32 * np.maximum(np.abs(lo), np.abs(hi))  # float32 arithmetic on the range's scale
    assert (np.abs(got - expected) <= tol).all()
    # A subset of channels, in the order asked for.
    assert (np.abs(codes.decode(c, [3, 1]).double().numpy() - expected[[3, 1]]) <= tol[[3, 1]]).all()


def test_exact_float32_min_and_max_are_kept():
    x = _channels((8, 17, 19), seed=1)
    c = codes.encode(x)
    lo, hi = _finite_range(x.numpy())
    assert c.vmin.tobytes() == lo.tobytes() and c.vmax.tobytes() == hi.tobytes()


def test_nan_is_255_and_infinities_sit_at_the_ends():
    x = torch.tensor([
        [1.0, 2.0, float("nan"), 3.0, float("inf"), float("-inf")],
        [-5.0, 5.0, 0.0, float("nan"), float("nan"), 1.0],
        [7.0, float("inf"), 7.5, 8.0, -1.0, 0.0],
    ])
    c = codes.encode(x)
    assert c.finite is False
    np.testing.assert_array_equal(c.vmin, np.array([1.0, -5.0, -1.0], np.float32))
    np.testing.assert_array_equal(c.vmax, np.array([3.0, 5.0, 8.0], np.float32))
    q = c.codes.numpy()
    assert q[0, 2] == 255 and q[1, 3] == 255 and q[1, 4] == 255
    assert q[0, 4] == 254 and q[2, 1] == 254 and q[0, 5] == 0
    assert (q[0, :2].tolist(), q[0, 3]) == ([0, 127], 254)
    got = codes.decode(c)
    assert torch.equal(torch.isnan(got), torch.isnan(x))
    assert got[0, 4] == 3.0 and got[0, 5] == 1.0 and got[2, 1] == 8.0  # +-Inf: the finite ends
    _assert_within_half_step(c, x)


def test_channels_without_finite_values_get_nan_ranges():
    x = torch.tensor([
        [float("nan"), float("nan"), float("nan")],
        [float("inf"), float("-inf"), float("nan")],
        [float("inf"), float("inf"), float("inf")],
        [0.5, 1.5, 2.5],
    ])
    c = codes.encode(x)
    assert np.isnan(c.vmin[:3]).all() and np.isnan(c.vmax[:3]).all()
    assert (c.vmin[3], c.vmax[3]) == (0.5, 2.5)
    assert c.codes.tolist()[:3] == [[255, 255, 255], [254, 0, 255], [254, 254, 254]]
    assert c.codes[3].tolist() == [0, 127, 254]


def test_constant_channels_are_all_code_zero_and_decode_exactly():
    x = torch.stack([torch.full((5, 4), v) for v in (0.0, -3.25, 1e30, 7.0)])
    x[3, 2, 2] = float("nan")  # a NaN does not make a constant channel less constant
    c = codes.encode(x)
    q = c.codes.clone()
    assert int(q[3, 2, 2]) == 255
    q[3, 2, 2] = 0
    assert int(q.max()) == 0
    np.testing.assert_array_equal(c.vmin, np.array([0.0, -3.25, 1e30, 7.0], np.float32))
    np.testing.assert_array_equal(c.vmin, c.vmax)
    got = codes.decode(c)
    ok = ~torch.isnan(x)
    assert torch.equal(got[ok], x[ok])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.uint8])
def test_non_float32_inputs_are_encoded_as_their_float32_values(dtype):
    x = (_channels((3, 6, 7), seed=4) * 10).to(dtype)
    c = codes.encode(x)
    ref = codes.encode(x.float())
    assert torch.equal(c.codes, ref.codes)
    assert c.vmin.dtype == np.float32
    np.testing.assert_array_equal(c.vmin, x.float().reshape(3, -1).amin(1).numpy())
    np.testing.assert_array_equal(c.vmax, x.float().reshape(3, -1).amax(1).numpy())
    _assert_within_half_step(c, x.double())


def test_encode_leaves_its_input_unchanged():
    x = _channels((4, 10, 10), seed=2)
    x[1, 0, 0] = float("nan")
    before = x.clone()
    codes.encode(x)
    assert torch.equal(torch.nan_to_num(x, nan=123.0), torch.nan_to_num(before, nan=123.0))


def test_nbytes_counts_codes_and_both_ranges():
    c = codes.encode(_channels((6, 11, 13)))
    assert c.nbytes == 6 * 11 * 13 + 2 * 4 * 6


def _reference_codes(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Independent float32 numpy reference: ``code = trunc((x - min) * gain + 0.5)`` per
    channel, with ``gain = 254 / (max - min)`` computed in float64 and rounded to float32 (0
    gain for a constant or undefined channel), then NaN -> 255, +Inf -> 254, -Inf -> 0."""
    C = a.shape[0]
    flat = a.reshape(C, -1)
    lo, hi = _finite_range(a)
    rng = hi.astype(np.float64) - lo.astype(np.float64)
    good = np.isfinite(rng) & (rng > 0)
    with np.errstate(all="ignore"):
        gain = np.where(good, 254 / np.where(good, rng, 1), 0).astype(F32)
        low = np.where(np.isfinite(lo), lo, F32(0)).astype(F32)
        v = (flat - low[:, None]).astype(F32)  # three float32 roundings: subtract, multiply, add
        v = (v * gain[:, None]).astype(F32)
        v = (v + F32(0.5)).astype(F32)
    t = np.trunc(np.where(np.isfinite(flat), v, 0))
    assert t.min() >= 0 and t.max() <= 254  # (the data below stay clear of the float32 edge cases)
    out = t.astype(np.uint8)
    out[np.isposinf(flat)] = 254
    out[np.isneginf(flat)] = 0
    out[np.isnan(flat)] = 255
    return out.reshape(a.shape), lo, hi


@pytest.mark.parametrize(
    "shape",
    [
        (80, 64, 64),  # 327,680 values in rows of 4,096: many rows per slice
        (3, 400, 400),  # rows of 160,000 values, longer than a slice
        (7, 3, 12_500),  # 262,500 values, just over the whole-tensor limit
    ],
)
def test_big_tensors_are_bit_identical_to_a_numpy_reference(shape):
    assert math.prod(shape) > 1 << 18
    x = _channels(shape, seed=5)
    x[1].fill_(3.25)  # constant
    x[2].view(-1)[::997] = float("nan")
    x[2].view(-1)[5] = float("inf")
    x[0].view(-1)[-1] = float("-inf")
    c = codes.encode(x)
    ref, lo, hi = _reference_codes(x.numpy())
    assert np.array_equal(c.codes.numpy(), ref)
    assert c.vmin.tobytes() == lo.tobytes() and c.vmax.tobytes() == hi.tobytes()
    assert c.finite is False
    finite = x.clone()
    finite[~torch.isfinite(finite)] = 0.0
    c = codes.encode(finite)
    ref, _, _ = _reference_codes(finite.numpy())
    assert np.array_equal(c.codes.numpy(), ref) and c.finite is True


def test_small_tensors_are_bit_identical_to_the_numpy_reference_too():
    x = _channels((9, 7, 5), seed=6)
    x[4, 0, 0] = float("nan")
    ref, _, _ = _reference_codes(x.numpy())
    assert np.array_equal(codes.encode(x).codes.numpy(), ref)


@pytest.mark.parametrize("pair", [(1.0, 1.0000155), (1.0, 1.0000001), (-24.0, -23.999632), (100.0, 100.00154)])
def test_nearly_constant_channel_keeps_its_extremes_at_0_and_254(pair):
    """A channel whose range is a few hundred float32 steps of its value (a bias-dominated
    channel): its minimum must be code 0, its maximum code 254, and no finite value NaN."""
    x = torch.tensor([pair], dtype=torch.float32)
    assert x[0, 1] > x[0, 0]
    c = codes.encode(x)
    assert c.codes[0].tolist() == [0, 254]


def test_a_channel_whose_range_overflows_float32_keeps_its_codes():
    x = torch.tensor([[-3e38, 3e38, 0.0]])
    c = codes.encode(x)
    assert c.codes[0].tolist() == [0, 254, 127]
    got = codes.decode(c)
    assert torch.isfinite(got).all() and got[0, 1] > 2.9e38 and got[0, 0] < -2.9e38


# --------------------------------------------------------------------------------- shrink


def _reference_shrink(c: np.ndarray, factor: int) -> np.ndarray:
    """Integer area mean of (C, H, W) codes, NaN codes (255) left out, in float64:
    ``floor(sum / count + 0.5)``; a block of NaN only stays 255; remainders dropped."""
    C, H, W = c.shape
    kh, kw = min(factor, H), min(factor, W)
    h, w = H // kh, W // kw
    blocks = c[:, : h * kh, : w * kw].reshape(C, h, kh, w, kw).astype(np.float64)
    ok = blocks != 255
    total = np.where(ok, blocks, 0).sum(axis=(2, 4))
    count = ok.sum(axis=(2, 4))
    mean = np.floor(total / np.maximum(count, 1) + 0.5)
    mean[count == 0] = 255
    return mean.astype(np.uint8)


@pytest.mark.parametrize("factor", [1, 2, 3, 4, 7])
def test_shrink_is_the_integer_area_mean_of_the_codes(factor):
    rng = np.random.default_rng(factor)
    c = rng.integers(0, 255, (5, 23, 30), dtype=np.uint8)  # no NaN code
    got = codes.shrink(torch.from_numpy(c), factor)
    assert got.dtype == torch.uint8
    assert tuple(got.shape[1:]) == codes.shrunk_size(23, 30, factor)
    assert np.array_equal(got.numpy(), _reference_shrink(c, factor))


@pytest.mark.parametrize("factor", [2, 3, 5])
def test_shrink_leaves_nan_codes_out_of_the_mean(factor):
    rng = np.random.default_rng(10 + factor)
    c = rng.integers(0, 255, (4, 20, 21), dtype=np.uint8)
    c[rng.random(c.shape) < 0.4] = 255
    c[0, :factor, :factor] = 255  # one block of NaN only
    ref = _reference_shrink(c, factor)
    assert ref[0, 0, 0] == 255
    got = codes.shrink(torch.from_numpy(c), factor, finite=False).numpy()
    assert np.array_equal(got, ref)  # ties (a mean half-way between two codes) included


def test_shrink_of_thin_maps_keeps_one_pixel():
    c = torch.arange(2 * 300, dtype=torch.float32).reshape(1, 2, 300).remainder(250).to(torch.uint8)
    got = codes.shrink(c, 5)
    assert tuple(got.shape) == (1, *codes.shrunk_size(2, 300, 5)) == (1, 1, 60)
    assert np.array_equal(got.numpy(), _reference_shrink(c.numpy(), 5))


def test_shrink_rounds_ties_the_same_way_with_nan_codes_present():
    c = np.full((1, 3, 3), 255, np.uint8)
    c[0, 0, :2] = [13, 12]  # mean 12.5 -> 13, as floor(mean + 0.5) everywhere else
    assert int(codes.shrink(torch.from_numpy(c), 3, finite=False)) == 13


@pytest.mark.parametrize(
    "size, factor",
    [((64, 64), 1), ((65, 10), 2), ((112, 112), 2), ((128, 127), 2), ((129, 1), 3), ((224, 224), 4),
     ((1, 1), 1), ((7, 300), 5), ((2048, 2048), 32), ((55, 2000), 32)],
)
def test_shrink_factor_is_ceil_of_the_longer_side_over_64(size, factor):
    assert codes.shrink_factor(*size) == factor == max(1, math.ceil(max(size) / 64))
    th, tw = codes.shrunk_size(*size, factor)
    assert max(th, tw) <= codes.MAX_TILE and min(th, tw) >= 1
    assert (th, tw) == (size[0] // min(factor, size[0]), size[1] // min(factor, size[1]))


def test_shrink_factor_with_another_tile_size():
    assert codes.shrink_factor(100, 30, max_tile=10) == 10
    assert codes.shrink_factor(10, 10, max_tile=10) == 1


# --------------------------------------------------------------------------------- codec


def test_pack_is_raw_little_endian_bytes():
    assert base64.b64decode(codec.pack(np.array([1, 2, 255], np.uint8))) == bytes([1, 2, 255])
    assert base64.b64decode(codec.pack(np.array([1.0], np.float32))) == b"\x00\x00\x80\x3f"
    assert base64.b64decode(codec.pack(np.array([1.0], ">f4"))) == b"\x00\x00\x80\x3f"
    assert base64.b64decode(codec.pack(np.array([1.0, -2.5], np.float64))) == np.array([1.0, -2.5], "<f4").tobytes()


@pytest.mark.parametrize("shape", [(0,), (7,), (3, 4), (2, 3, 5), (2, 1, 3, 3)])
def test_pack_unpack_round_trip_is_exact(shape):
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, shape, dtype=np.uint8)
    assert np.array_equal(codec.unpack_array(codec.pack(u8), "u1", shape), u8)
    f = rng.normal(size=shape).astype(np.float32)
    specials = np.array([np.nan, np.inf, -np.inf, -0.0, 1e-45, 3.4e38], np.float32)
    f.reshape(-1)[: min(f.size, 6)] = specials[: min(f.size, 6)]
    back = codec.unpack_array(codec.pack(f), "f4", shape)
    assert back.dtype == np.dtype("<f4") and back.shape == shape
    assert back.tobytes() == f.astype("<f4").tobytes()  # bit for bit, NaN and -0.0 included


def test_pack_of_a_non_contiguous_array():
    a = np.arange(24, dtype=np.uint8).reshape(4, 6)[:, ::2]
    assert np.array_equal(codec.unpack_array(codec.pack(a), "u1", a.shape), a)


@pytest.mark.parametrize("dtype", [np.int16, np.int64, np.uint16, np.bool_, np.complex64])
def test_pack_refuses_other_dtypes(dtype):
    with pytest.raises(TypeError, match="uint8|float32"):
        codec.pack(np.zeros(3, dtype))


def test_payload_fields():
    x = _channels((5, 4, 6), seed=8)
    c = codes.encode(x)
    p = codec.payload("maps", "conv1", 3, c.codes.numpy()[2:4], c, first=2, scale=2)
    assert json.loads(json.dumps(p)) == p  # plain JSON
    assert p["format"] == codec.FORMAT == 1
    assert (p["kind"], p["layer"], p["version"], p["first"], p["shape"], p["count"], p["scale"]) == (
        "maps", "conv1", 3, 2, [2, 4, 6], 5, 2,
    )
    assert len(base64.b64decode(p["codes"])) == 2 * 4 * 6
    assert len(base64.b64decode(p["vmin"])) == len(base64.b64decode(p["vmax"])) == 5 * 4
    u = codec.unpack(p)
    assert u["codes"].dtype == np.uint8 and u["codes"].shape == (2, 4, 6)
    assert np.array_equal(u["codes"], c.codes.numpy()[2:4])
    assert u["vmin"].tobytes() == c.vmin.tobytes() and u["vmax"].tobytes() == c.vmax.tobytes()
    assert p["codes"] == codec.pack(c.codes.numpy()[2:4])  # unpack does not change the payload


def test_payload_takes_any_item_shape():
    w = torch.randn(6, 3, 5, 5)
    c = codes.encode(w)
    p = codec.payload("filters", "c", 1, c.codes.numpy(), c, depthwise=False, bgr=True)
    assert p["shape"] == [6, 3, 5, 5] and p["first"] == 0 and p["bgr"] is True
    assert np.array_equal(codec.unpack(p)["codes"], c.codes.numpy())
