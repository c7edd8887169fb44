"""Compact storage of activations and weights: uint8 codes with exact float32 ranges.

Every channel (the first axis) is quantised linearly between its own exact minimum and maximum
over its finite values: code ``q`` in 0..254 stands for ``vmin + q * (vmax - vmin) / 254``,
within half a step of the true value. Code 255 is NaN; +Inf and -Inf sit at codes 254 and 0.
A channel without finite values has ``vmin = vmax = NaN``. The browser decodes the same way
(``js/codec.js``), so this module and that one are the two ends of one format.

>>> import torch
>>> c = encode(torch.tensor([[[0.0, 1.0], [2.0, 254.0]]]))
>>> c.codes.tolist(), c.vmin.tolist(), c.vmax.tolist()
([[[0, 1], [2, 254]]], [0.0], [254.0])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["LEVELS", "MAX_TILE", "NAN_CODE", "Codes", "decode", "encode", "shrink", "shrink_factor", "shrunk_size"]

LEVELS = 254
"""The largest finite code: codes 0..254 span a channel's min..max."""
NAN_CODE = 255
"""The code of NaN."""
MAX_TILE = 64
"""Tiles in a grid are at most this many pixels on their longer side."""

# Outputs larger than _WHOLE values are encoded in slices of about _SLICE values (512 KiB of
# float32), so that the multiply-add and the cast of each slice read it from the core's cache
# rather than from main memory, in a scratch buffer that is reused instead of page-faulted in.
_WHOLE = 1 << 18
_SLICE = 1 << 17


@dataclass(frozen=True)
class Codes:
    """uint8 codes of a (C, ...) tensor with each channel's exact float32 range.

    Attributes
    ----------
    codes : torch.Tensor
        uint8, the shape of the encoded tensor, on the CPU.
    vmin, vmax : numpy.ndarray
        (C,) float32: each channel's exact minimum and maximum over its finite values (NaN for
        a channel without finite values).
    finite : bool
        Whether every value was finite (no code means NaN or Inf).
    """

    codes: torch.Tensor
    vmin: np.ndarray
    vmax: np.ndarray
    finite: bool

    @property
    def nbytes(self) -> int:
        """Bytes held: the codes plus the two ranges."""
        return self.codes.numel() + self.vmin.nbytes + self.vmax.nbytes


def _ranges(flat: torch.Tensor) -> tuple[np.ndarray, np.ndarray, bool]:
    """Exact float32 per-row finite (min, max) of a (C, N) tensor, and "all finite"."""
    # amin and amax rather than torch.aminmax(dim=1): on the CPU the fused op is 20-40x slower
    # for rows of a few thousand values (benchmarks/README.md).
    lo, hi = flat.amin(dim=1), flat.amax(dim=1)
    pair = torch.stack((lo, hi)).cpu().numpy()
    finite = bool(np.isfinite(pair).all())
    if not finite:  # NaN poisons amin/amax, and +-Inf are not a usable range: finite values only
        ok = torch.isfinite(flat)
        lo = torch.where(ok, flat, torch.inf).amin(dim=1)
        hi = torch.where(ok, flat, -torch.inf).amax(dim=1)
        pair = torch.stack((lo, hi)).cpu().numpy()
        pair[~np.isfinite(pair)] = np.nan  # a row without finite values has no range
    return pair[0].astype(np.float32), pair[1].astype(np.float32), finite


def _gain(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel float32 ``gain`` with ``code = trunc((value - lo) * gain + 0.5)``, and which
    channels need float64 arithmetic instead (a range beyond float32, or a gain that is).

    The range and the gain are computed in float64: ``hi - lo`` may overflow float32. A
    constant or undefined channel gets gain 0 (every value code 0). Subtracting ``lo`` first
    keeps a channel whose range is tiny next to its values exact: ``x * gain + base`` lost the
    offset there, and codes wrapped past 255.
    """
    rng = hi.astype(np.float64) - lo.astype(np.float64)
    if rng.min() > 0 and rng.max() < 3.4e38 and rng.min() > 1e-30:  # the common case: no special channel
        return (LEVELS / rng).astype(np.float32), np.zeros(len(rng), bool)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        ok = np.isfinite(rng) & (rng > 0)
        gain64 = np.where(ok, LEVELS / np.where(ok, rng, 1), 0)
        gain = gain64.astype(np.float32)
        wide = ok & (~np.isfinite(gain) | ~np.isfinite((hi - lo).astype(np.float32)))
    return gain, wide


def encode(x: torch.Tensor) -> Codes:
    """Encode a (C, ...) tensor, on any device and of any real dtype, into :class:`Codes`.

    The ranges are computed where ``x`` lives; the codes come back to the CPU.

    Parameters
    ----------
    x : torch.Tensor
        At least 1-D; the first axis is the channel.

    Returns
    -------
    Codes

    Examples
    --------
    >>> c = encode(torch.tensor([[1.0, 3.0, float("nan")], [2.0, 2.0, 2.0]]))
    >>> c.codes.tolist(), c.finite
    ([[0, 254, 255], [0, 0, 0]], False)
    """
    if x.dtype != torch.float32:
        x = x.float()
    C = x.shape[0]
    flat = x.reshape(C, -1)
    codes = torch.empty(x.shape, dtype=torch.uint8)
    if x.device.type == "cpu":
        quick = _encode_cpu(flat, codes.view(C, -1))
        if quick is not None:
            return Codes(codes, *quick, True)
    vmin, vmax, finite = _ranges(flat)
    gain, wide = _gain(vmin, vmax)
    lo = np.where(np.isfinite(vmin), vmin, 0).astype(np.float32)
    if x.device.type == "cpu":
        _quantize_cpu(flat, lo, gain, codes.view(C, -1))
    else:  # on the device, then one copy of the codes (a quarter of the floats) to the CPU
        g = torch.from_numpy(gain).to(x.device)[:, None]
        l0 = torch.from_numpy(lo).to(x.device)[:, None]
        codes.view(C, -1).copy_(((flat - l0) * g + 0.5).clamp_(0, LEVELS + 0.5).to(torch.uint8))
    if wide.any():  # ranges beyond float32: those channels in float64 (rare)
        for c in np.flatnonzero(wide):
            v = flat[c].detach().cpu().double().numpy()
            q = (v - float(vmin[c])) * (LEVELS / (float(vmax[c]) - float(vmin[c]))) + 0.5
            codes.view(C, -1)[c] = torch.from_numpy(np.clip(np.nan_to_num(q, nan=0.0), 0, LEVELS + 0.5).astype(np.uint8))
    if not finite:
        view = codes.view(C, -1)
        view[torch.isposinf(flat).cpu()] = LEVELS
        view[torch.isneginf(flat).cpu()] = 0
        view[torch.isnan(flat).cpu()] = NAN_CODE
    return Codes(codes, vmin, vmax, finite)


# Below these sizes numpy beats torch (its call overhead is lower; torch's threads and its
# preallocated buffers win above): ranges, and codes (measured on 2 cores, benchmarks/README.md).
_NUMPY_RANGES = 1 << 14
_NUMPY_CODES = 1 << 12


def _encode_cpu(flat: torch.Tensor, out: torch.Tensor) -> tuple[np.ndarray, np.ndarray] | None:
    """The common case in few calls: a CPU float32 (C, N) tensor whose every value is finite;
    writes ``out`` and returns ``(vmin, vmax)``. Anything else returns None, having written
    nothing (the general path takes it).

    Bit for bit the general path's result; it exists because the hooks call it for every layer
    (EfficientNet-B0 has 81 convolutions, most of them small) and the general path's fixed
    costs, about 90 us a call, were a large part of the capture.
    """
    arr = flat.detach().numpy()
    if arr.size <= _NUMPY_RANGES:  # numpy's call overhead is lower; torch's threads pay off above
        lo, hi = arr.min(axis=1), arr.max(axis=1)
    else:
        lo, hi = flat.amin(dim=1).numpy(), flat.amax(dim=1).numpy()
    if not (np.isfinite(lo.min()) and np.isfinite(hi.max())):  # NaN or an infinity somewhere
        return None
    gain, wide = _gain(lo, hi)
    if wide.any():
        return None
    if arr.size <= _NUMPY_CODES:  # whole: finite values and finite gains raise no warning
        buf = np.subtract(arr, lo[:, None])
        np.multiply(buf, gain[:, None], out=buf)
        np.add(buf, np.float32(0.5), out=buf)
        np.copyto(out.numpy(), buf, casting="unsafe")
    else:
        _quantize_cpu(flat, lo, gain, out)
    return lo, hi


def _quantize_cpu(flat: torch.Tensor, lo: np.ndarray, gain: np.ndarray, out: torch.Tensor) -> None:
    """``out = trunc((flat - lo) * gain + 0.5)`` row-wise.

    Every finite value lands in [0.5, 254.5]: ``flat - lo`` is at most the float32 range, and
    ``gain`` is 254 over the exact range, so the product stays within rounding of 254 (no
    clamp, no wrap). The arithmetic runs in torch (three float32 ops, on every intra-op thread;
    the same IEEE results as numpy's), the cast in numpy: torch's float-to-uint8 cast is several
    times slower on the CPU. Slices of about 512 KiB stay in the core's cache between the passes.
    """
    x, y = flat.detach(), out.numpy()
    C, N = x.shape
    rows = max(1, _SLICE // max(1, N)) if x.numel() > _WHOLE else C
    scratch = torch.empty(min(C, rows) * N, dtype=torch.float32).view(-1, N)
    lo_t, gain_t = torch.from_numpy(lo)[:, None], torch.from_numpy(gain)[:, None]
    for i in range(0, C, rows):
        j = min(C, i + rows)
        buf = scratch[: j - i]
        torch.sub(x[i:j], lo_t[i:j], out=buf)
        buf.mul_(gain_t[i:j]).add_(0.5)
        with np.errstate(invalid="ignore", over="ignore"):
            np.copyto(y[i:j], buf.numpy(), casting="unsafe")


def decode(c: Codes, channels=None) -> torch.Tensor:
    """Float32 values of ``channels`` (default all), decoded from the codes.

    Each finite value is within half a step, ``(vmax - vmin) / 508``, of the true value.

    Examples
    --------
    >>> c = encode(torch.tensor([[0.0, 0.5, 1.0]]))
    >>> [round(v, 3) for v in decode(c)[0].tolist()]
    [0.0, 0.5, 1.0]
    """
    idx = list(range(c.codes.shape[0])) if channels is None else list(channels)
    codes = c.codes[idx]
    lo = np.nan_to_num(c.vmin[idx].astype(np.float64), nan=0.0)
    step = np.nan_to_num(c.vmax[idx].astype(np.float64) - lo, nan=0.0) / LEVELS  # float64: no overflow
    shape = (len(idx),) + (1,) * (codes.dim() - 1)
    out = (codes.double() * torch.from_numpy(step).view(shape) + torch.from_numpy(lo).view(shape)).float()
    if not c.finite:
        out[codes == NAN_CODE] = float("nan")
    return out


def shrink_factor(height: int, width: int, max_tile: int = MAX_TILE) -> int:
    """The integer factor that brings a ``height`` x ``width`` map within ``max_tile`` pixels."""
    longer = max(height, width)
    return -(-longer // max_tile) if longer > max_tile else 1


def shrunk_size(height: int, width: int, factor: int) -> tuple[int, int]:
    """The tile size :func:`shrink` makes of a ``height`` x ``width`` map.

    >>> shrunk_size(111, 111, 2), shrunk_size(2, 300, 5)
    ((55, 55), (1, 60))
    """
    return height // min(factor, height), width // min(factor, width)


def shrink(codes: torch.Tensor, factor: int, *, finite: bool = True) -> torch.Tensor:
    """Area-average (C, H, W) codes by an integer ``factor``; remainder rows/columns are dropped.

    Codes are linear in the value, so their mean is the mean value's code, rounded half up in
    integer arithmetic (the same whether or not NaN codes are there). NaN codes do not take
    part in a mean; a block of NaN only stays NaN.

    Examples
    --------
    >>> shrink(torch.tensor([[[0, 2], [4, 254]]], dtype=torch.uint8), 2).tolist()
    [[[65]]]
    """
    if factor == 1:
        return codes
    kernel = (min(factor, codes.shape[1]), min(factor, codes.shape[2]))  # a thin map keeps 1 px
    # Sums of at most 64 x 64 codes are exact in float32, and a mean is one division of exact
    # integers: rounded once, it never crosses a half (those are 1 / (2 n) away), so
    # floor(mean + 0.5) rounds halves up exactly.
    if finite:
        return _block_mean(codes, kernel)
    else:
        x = codes.float()[:, None]
        ok = (x != NAN_CODE).float()
        count = F.avg_pool2d(ok, kernel, divisor_override=1)
        mean = F.avg_pool2d(x * ok, kernel, divisor_override=1) / count.clamp(min=1)
        mean[count == 0] = NAN_CODE
    return mean.add_(0.5).floor_()[:, 0].to(torch.uint8)


def _block_mean(codes: torch.Tensor, kernel: tuple[int, int]) -> torch.Tensor:
    """Rounded means of ``kernel`` blocks of uint8 codes, in integers: sums of strided views
    (a few SIMD adds, about 7x faster than ``avg_pool2d`` on floats), then
    ``(2 sum + n) // (2 n)``."""
    fy, fx = kernel
    C, H, W = codes.shape
    h, w = H // fy, W // fx
    a = codes.numpy()
    wide = np.uint16 if fy * fx * LEVELS < 1 << 16 else np.uint32
    cols = a[:, : h * fy, 0 : w * fx : fx].astype(wide)
    for j in range(1, fx):
        cols += a[:, : h * fy, j : w * fx : fx]
    sums = cols[:, 0::fy, :].copy()
    for i in range(1, fy):
        sums += cols[:, i::fy, :]
    n = fy * fx
    return torch.from_numpy(((2 * sums.astype(np.uint32) + n) // (2 * n)).astype(np.uint8))
