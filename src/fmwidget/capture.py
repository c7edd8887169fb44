"""Layer discovery, forward hooks and the one forward pass.

Everything here restores the user's model exactly: hooks are removed, every module's
``training`` flag and every parameter's ``requires_grad`` flag come back as they were, also
when the forward pass raises.

Reused modules
--------------
A module that runs more than once in one forward pass (the ReLU of a torchvision ResNet block
runs three times) is captured at its **first** call, both for the views and for
:func:`exact_activation`. :attr:`LayerInfo.calls` records how many calls there were, so the
widget can say so. The first call is the one that matches the module's place in the
forward-execution order used for :attr:`Capture.layers`.

Background compaction
---------------------
On the CPU, a hook only takes a private float32 copy of its layer's output (so in-place
operations later in the forward pass, such as ``ReLU(inplace=True)`` or ``out += identity``,
cannot change what is kept) and hands it to its capture's job in the shared compaction threads
(:mod:`fmwidget._pools`), which turns it into uint8 codes and exact ranges: once the forward
pass is done (with ``defer=True``, at :meth:`Capture.resume`), or during it when the copies
grow large (``_WAKE_BYTES``; ``_PENDING_LIMIT`` bounds them). :func:`capture` returns when the
forward pass is done; each accessor of :class:`Capture` waits for just the layers it reads (or
compacts a layer still queued itself), and :meth:`Capture.wait` for all of them. Outputs on
other devices (CUDA) are compacted in the hook, as before.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import itertools
import threading
import traceback
import weakref
from collections import Counter, deque
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ._pools import shared_pool

__all__ = [
    "Capture",
    "Early",
    "LayerInfo",
    "ModelError",
    "capture",
    "exact_activation",
    "model_device",
    "model_state",
    "release_reserve",
    "resolve_layer",
]


@dataclass(frozen=True)
class LayerInfo:
    """What the views need to know about one offered layer."""

    name: str
    type: str
    out_shape: tuple[int, int, int]
    weight_shape: tuple[int, ...] | None
    calls: int = 1
    depthwise: bool = False

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "type": self.type,
            "out_shape": list(self.out_shape),
            "weight_shape": list(self.weight_shape) if self.weight_shape else None,
            "calls": self.calls,
            "depthwise": self.depthwise,
        }


_NAN_CODE = 255  # uint8 code of NaN; finite values use 0..254
_LEVELS = 254


@dataclass
class _Stored:
    codes: torch.Tensor  # (C, H, W) uint8 on CPU: value ~ vmin + code * step; 255 = NaN
    vmin: np.ndarray  # (C,) float32 exact per-channel minimum over finite values
    vmax: np.ndarray  # (C,) float32 exact per-channel maximum over finite values
    finite: bool

    def decoder(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel (step, offset) with value = code * step + offset (0, 0 where undefined)."""
        with np.errstate(invalid="ignore", over="ignore"):
            rng = self.vmax - self.vmin
            ok = np.isfinite(rng) & (rng > 0)
            step = np.where(ok, rng / _LEVELS, 0).astype(np.float32)
            offset = np.where(np.isfinite(self.vmin), self.vmin, 0).astype(np.float32)
        return step, offset


@dataclass
class Capture:
    """The result of one forward pass: compact activations of every offered layer.

    The views read :meth:`maps` (uint8 codes, a quarter of the float32 size: each channel
    quantised linearly between its own exact min and max, 255 levels) and :meth:`stats` (those
    exact float32 ranges and the decoding). Exact float32 activations come from
    :func:`exact_activation`.

    CPU layers may still be being compacted in the background when :func:`capture` returns:
    every accessor waits for the layers it reads (:meth:`ready` tells whether it would wait),
    and :meth:`wait` waits for all of them.
    """

    layers: list[LayerInfo]
    output: Any = None
    # Per layer, the finished _Stored or the background compaction's Future of one; the first
    # access replaces a Future by its result (under _lock: the widget's prefetch thread reads
    # too).
    _store: dict[str, _Stored | Future] = field(default_factory=dict, repr=False)
    _compactor: _Compactor | None = field(default=None, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._compactor is not None:
            # A capture dropped before its layers are done cancels the rest of the work. The
            # compactor holds no reference to this Capture, so this does not keep it alive.
            weakref.finalize(self, self._compactor.cancel)

    @property
    def names(self) -> list[str]:
        return [info.name for info in self.layers]

    def info(self, name: str) -> LayerInfo:
        for info in self.layers:
            if info.name == name:
                return info
        raise KeyError(name)

    def _get(self, name: str) -> _Stored:
        """The layer's compact storage, waiting for its background compaction if needed."""
        item = self._store[name]
        if isinstance(item, _Stored):
            return item
        if not item.done() and self._compactor is not None:
            self._compactor.run_now(item)  # still queued: do it here rather than wait
        try:
            stored = item.result()
        except CancelledError:
            raise ValueError(
                f"layer {name!r}: its activations were freed (Capture.clear(), e.g. by closing "
                f"the explorer) before they were ready; capture the model again."
            ) from None
        except BaseException as err:
            if not (item.done() and item.exception() is err):
                raise  # e.g. KeyboardInterrupt while waiting: not the compaction's error
            raise _worker_error(name, err) from err
        with self._lock:
            if self._store.get(name) is item:  # not cleared meanwhile
                self._store[name] = stored
        return stored

    def resume(self) -> None:
        """Start compacting the remaining layers in the background, for a capture made with
        ``defer=True``. The widget calls it once its first picture is built: the background
        thread's Python would otherwise compete with that picture for the GIL."""
        if self._compactor is not None:
            self._compactor.resume()

    def ready(self, name: str) -> bool:
        """Whether layer ``name`` is compacted, so that reading it does not wait.

        Also True when its compaction failed: reading it then raises that error.
        """
        item = self._store[name]
        return isinstance(item, _Stored) or item.done()

    def wait(self) -> None:
        """Block until every layer is compacted.

        Raises
        ------
        RuntimeError
            If compacting a layer failed (e.g. the machine ran out of memory); the message
            names the first such layer and the original error is chained. The other layers are
            still readable.
        """
        if self._compactor is not None:
            self._compactor.drain()
        first: BaseException | None = None
        for name in list(self._store):
            try:
                self._get(name)
            except KeyError:  # cleared meanwhile
                pass
            except (RuntimeError, ValueError) as err:  # a failed or cancelled layer
                first = first or err
        if first is not None:
            raise first

    def maps(self, name: str) -> torch.Tensor:
        """(C, H, W) uint8 codes of the layer's output: ``code * stats['scale'] + stats['offset']``.

        Code 255 is NaN; +Inf and -Inf sit at the channel's ends. Use :meth:`values` for the
        decoded float32 values of some channels.
        """
        return self._get(name).codes

    def values(self, name: str, channels: Sequence[int] | None = None) -> torch.Tensor:
        """Float32 (n, H, W) values of ``channels`` (default all), decoded from the codes.

        Each value is within half a step, ``(max - min) / 508``, of the true output.
        """
        s = self._get(name)
        idx = list(range(s.codes.shape[0])) if channels is None else list(channels)
        step, offset = s.decoder()
        codes = s.codes[idx]
        out = codes.float() * torch.from_numpy(step[idx])[:, None, None] + torch.from_numpy(offset[idx])[:, None, None]
        if not s.finite:
            out[codes == _NAN_CODE] = float("nan")
        return out

    def stats(self, name: str) -> dict:
        """Exact float32 per-channel ``min``/``max`` (finite values only), the codes' decoding
        (``scale``, ``offset``, ``nan_code``) and ``finite``."""
        s = self._get(name)
        step, offset = s.decoder()
        return {
            "min": s.vmin,
            "max": s.vmax,
            "scale": step,
            "offset": offset,
            "nan_code": None if s.finite else _NAN_CODE,
            "finite": s.finite,
        }

    @property
    def nbytes(self) -> int:
        """Bytes held for the views (uint8 codes plus the exact per-channel min and max).

        Waits for the background compaction of every layer (:meth:`wait`).
        """
        self.wait()
        with self._lock:
            stored = [s for s in self._store.values() if isinstance(s, _Stored)]
        return sum(s.codes.numel() + s.vmin.nbytes + s.vmax.nbytes for s in stored)

    def clear(self) -> None:
        """Drop every layer's activations and the model output; cancel compaction not started."""
        if self._compactor is not None:
            self._compactor.cancel()
        with self._lock:
            self._store.clear()
        self.output = None


def _worker_error(name: str, err: BaseException) -> RuntimeError:
    """The error an accessor raises for a layer whose background compaction failed."""
    if isinstance(err, MemoryError):
        hint = (
            "The machine ran out of memory: free some (close other explorers), or use a "
            "smaller input or fewer layers (layers=[...])."
        )
    elif not isinstance(err, Exception):  # KeyboardInterrupt while compacting it in a reader
        hint = "Its activations are lost; capture the model again (create a new explorer)."
    else:
        hint = "This is a bug in fmwidget; please report it with the model and the input size."
    return RuntimeError(
        f"layer {name!r}: compacting its output in the background failed with "
        f"{type(err).__name__}: {err}. {hint}"
    )


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a stateless model."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def model_state(model: nn.Module, *, eval_mode: bool = False) -> Iterator[list]:
    """Snapshot the model's mode and ``requires_grad`` flags; restore them and remove hooks.

    Yields a list: append every hook handle to it and it is removed on exit, whatever happens.
    Each module's own ``training`` flag is restored (a model with mixed train/eval modules
    comes back mixed), without calling ``train()``, which would overwrite children. With
    ``eval_mode=True`` the model is put in eval mode inside: ``model.eval()``, skipped when no
    module is training (it sets every module's flag through the slow
    ``nn.Module.__setattr__``: ~1 ms for EfficientNet's ~340 modules).
    """
    modules = list(model.modules())
    modes = [(m, m.training) for m in modules]
    # The parameters from the module list (one traversal less than model.parameters()); a
    # parameter shared by two modules appears twice, with the same flag.
    grads = [(p, p.requires_grad) for m in modules for p in m._parameters.values() if p is not None]
    handles: list = []
    try:
        if eval_mode and any(training for _, training in modes):
            model.eval()
        yield handles
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes:
            if module.training != training:  # nn.Module.__setattr__ is slow: set only changes
                module.training = training
        for param, flag in grads:
            if param.requires_grad != flag:
                param.requires_grad_(flag)


def _check_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    own = model_device(model)
    if own.type == "meta":
        raise ValueError(
            "model: its parameters are on the 'meta' device, which holds no values, so there "
            "is nothing to show. Materialise it first, e.g. model.to_empty(device='cpu') and "
            "then model.load_state_dict(...)."
        )
    if device is None:
        return own
    try:
        wanted = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not a torch device; use e.g. 'cpu' or 'cuda:0'.") from err
    if wanted.type == "meta":
        raise ValueError(
            "device='meta' holds no values, so there is nothing to show; pass device=None (the "
            "input follows the model) or the device the model's parameters are on, e.g. 'cpu'."
        )
    stateless = next(iter(model.parameters()), None) is None and next(iter(model.buffers()), None) is None
    if stateless:
        return wanted
    if wanted.type == own.type and wanted.index in (None, own.index):
        return own
    raise ValueError(
        f"device={str(wanted)!r}, but the model's parameters are on {str(own)!r}. fmwidget "
        f"never moves your model: pass device=None (the input follows the model), or move "
        f"the model yourself with model.to({str(wanted)!r})."
    )


def _names(model: nn.Module) -> dict[nn.Module, str]:
    return {module: name for name, module in model.named_modules() if name}


def resolve_layer(names: Sequence[str], name: Any, *, argname: str = "layer") -> str:
    """Return ``name`` if it is one of ``names``; otherwise raise a ValueError with suggestions."""
    if not isinstance(name, str):
        raise TypeError(f"{argname} must be a layer name (str), got {type(name).__name__} {name!r}.")
    if name in names:
        return name
    close = difflib.get_close_matches(name, list(names), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    shown = ", ".join(repr(n) for n in list(names)[:8]) + (", ..." if len(names) > 8 else "")
    raise ValueError(f"{argname}={name!r} is not one of the offered layers ({shown}).{hint}")


def _candidates(model: nn.Module, layers: Any) -> tuple[dict[nn.Module, str], bool]:
    """Modules to hook, and whether the user named them explicitly."""
    named = _names(model)
    if layers is None:
        convs = {m: n for m, n in named.items() if isinstance(m, nn.Conv2d)}
        if not convs:
            raise ValueError(
                "model: it has no nn.Conv2d layer, so there are no filters to show. Pass "
                "layers='all' to see every module with a 4-D output, or a list of module names."
            )
        return convs, False
    if isinstance(layers, str):
        if layers != "all":
            raise ValueError(
                f"layers={layers!r} is not understood. Use None (every nn.Conv2d), 'all' (every "
                f"module with a 4-D output) or a list of names from model.named_modules()."
            )
        return named, False
    if not isinstance(layers, (list, tuple)) or not layers:
        raise TypeError(
            f"layers must be None, 'all' or a non-empty list of module names, got {layers!r}."
        )
    by_name = {n: m for m, n in named.items()}
    chosen = {}
    for item in layers:
        chosen[by_name[resolve_layer(list(by_name), item, argname="layers")]] = item
    return chosen, True


# Outputs larger than _WHOLE values are compacted in slices of about _SLICE values (512 KiB of
# float32), so that the three passes over each slice (min, max, scaled copy) read it from the
# core's cache rather than from main memory: at 1024 px this cut compaction of ResNet-50's
# 886 MB of conv outputs by about 40% (benchmarks/README.md). Smaller outputs gain nothing.
_WHOLE = 1 << 20
_SLICE = 1 << 17


def _ranges(part: torch.Tensor) -> tuple[np.ndarray, np.ndarray, bool]:
    """Exact float32 per-channel finite (min, max) and "all finite"."""
    flat = part.reshape(part.shape[0], -1)
    # amin and amax rather than torch.aminmax(dim=1): on the CPU the fused op is 20-40x slower
    # for rows of a few thousand values (measured: 256x56x56 2.2 ms vs 0.09 ms).
    ranges = torch.stack((flat.amin(dim=1), flat.amax(dim=1))).cpu().numpy()
    finite = bool(np.isfinite(ranges).all())
    if not finite:
        ok = torch.isfinite(flat)
        lo = torch.where(ok, flat, torch.inf).amin(dim=1)
        hi = torch.where(ok, flat, -torch.inf).amax(dim=1)
        ranges = torch.stack((lo, hi)).cpu().numpy()
    return ranges[0].astype(np.float32), ranges[1].astype(np.float32), finite


def _quantize(part: torch.Tensor, lo: np.ndarray, hi: np.ndarray, finite: bool, out: torch.Tensor) -> None:
    """Write ``part``'s uint8 codes into ``out``: 0..254 linear between each channel's lo and hi.

    Code = trunc(value * gain + base), with 0.5 folded into ``base`` so the truncating cast
    rounds; finite values land in [0.5, 254.5], so no clamp is needed. NaN gets code 255; +Inf
    and -Inf clip to 254 and 0. On the CPU numpy does the multiply-add and the cast (measured:
    as fast as a float16 copy; torch's float-to-uint8 cast is 3-5x slower).
    """
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        rng = hi - lo
        ok = np.isfinite(rng) & (rng > 0)
        gain = np.where(ok, _LEVELS / np.where(ok, rng, 1), 0).astype(np.float32)[:, None, None]
        base = (np.where(np.isfinite(lo), -lo * gain[:, 0, 0], 0) + 0.5).astype(np.float32)[:, None, None]
    if part.device.type == "cpu" and part.dtype == torch.float32 and out.device.type == "cpu":
        buf = np.multiply(part.numpy(), gain)
        np.add(buf, base, out=buf)
        with np.errstate(invalid="ignore"):
            np.copyto(out.numpy(), buf, casting="unsafe")
    else:
        dev = part.device
        x = torch.addcmul(torch.from_numpy(base).to(dev), part, torch.from_numpy(gain).to(dev))
        out.copy_(x.clamp_(0, _LEVELS + 0.5))
    if not finite:
        out[torch.isposinf(part)] = _LEVELS
        out[torch.isneginf(part)] = 0
        out[torch.isnan(part)] = _NAN_CODE


def _compact(out: torch.Tensor) -> _Stored:
    """Copy one (1, C, H, W) output into compact CPU storage with exact float32 ranges."""
    a = out[0].detach()
    C = a.shape[0]
    codes = torch.empty(a.shape, dtype=torch.uint8, device=a.device)
    vmin, vmax = np.empty(C, np.float32), np.empty(C, np.float32)
    big = a.device.type == "cpu" and a.numel() > _WHOLE
    step = max(1, _SLICE // max(1, a[0].numel())) if big else max(1, C)
    finite = True
    for i in range(0, C, step):
        part = a[i : i + step]
        if part.dtype != torch.float32:
            part = part.float()
        lo, hi, ok = _ranges(part)
        vmin[i : i + step], vmax[i : i + step] = lo, hi
        finite = finite and ok
        _quantize(part, lo, hi, ok, codes[i : i + step])
    return _Stored(codes=codes.cpu(), vmin=vmin, vmax=vmax, finite=finite)


def _compact_owned(a: torch.Tensor) -> _Stored:
    """:func:`_compact` for a private, contiguous float32 (C, H, W) CPU copy, which it overwrites.

    Bit for bit the same result as ``_compact(a[None])``, with less work: the ranges go straight
    into the result arrays, the finite case needs no mask and no float32 temporary (the
    multiply-add runs in place on the copy, a slice at a time while it is in cache), and one
    ``np.errstate`` covers the layer. Slices with NaN or Inf take ``_compact``'s own path.
    """
    C = a.shape[0]
    codes = torch.empty(a.shape, dtype=torch.uint8)
    ranges = np.empty((2, C), np.float32)  # rows: vmin, vmax
    lo_hi, x, y = torch.from_numpy(ranges), a.numpy(), codes.numpy()
    step = max(1, _SLICE // max(1, a.shape[1] * a.shape[2])) if a.numel() > _WHOLE else max(1, C)
    finite = True
    # The float32 arithmetic below is _quantize's, op for op: gain = 254 / (hi - lo) where
    # that range is > 0 (an overflowed, infinite range gives 254 / inf = 0, as there), base =
    # 0.5 - lo * gain (== -lo * gain + 0.5 exactly), code = trunc(value * gain + base). The only
    # warnings possible come from degenerate ranges, which _quantize silences too.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for i in range(0, C, step):
            j = min(i + step, C)
            part = a[i:j]
            flat = part.view(j - i, -1)
            torch.amin(flat, dim=1, out=lo_hi[0, i:j])
            torch.amax(flat, dim=1, out=lo_hi[1, i:j])
            lo, hi = ranges[0, i:j], ranges[1, i:j]
            if not np.isfinite(ranges[:, i:j]).all():
                finite = False
                lo[:], hi[:], _ = _ranges(part)
                _quantize(part, lo, hi, False, codes[i:j])
                continue
            rng = hi - lo
            gain = np.zeros(j - i, np.float32)
            np.divide(np.float32(_LEVELS), rng, out=gain, where=rng > 0)
            base = np.multiply(lo, gain)
            np.subtract(np.float32(0.5), base, out=base)
            xs = x[i:j]
            np.multiply(xs, gain[:, None, None], out=xs)
            np.add(xs, base[:, None, None], out=xs)
            # Separate add and cast: a ufunc writing uint8 directly goes through a buffered
            # cast and is about 1.5x slower than the two SIMD loops.
            np.copyto(y[i:j], xs, casting="unsafe")
    return _Stored(codes=codes, vmin=ranges[0], vmax=ranges[1], finite=finite)


# Bytes of float32 copies the background compactor may hold (queued, being compacted, or kept
# for reuse): a hook that would exceed it waits for the worker (a single larger copy waits until
# nothing else is pending). It bounds the extra memory when the forward pass outruns the compaction
# (ResNet-50 at 1024 px makes 886 MB of conv outputs).
_PENDING_LIMIT = 256 << 20
# The worker compacts nothing until this many bytes of copies are queued (or the forward pass
# is done, or a hook waits for room). Compacting beside the forward pass cost more than it saved
# on a 2-core VM: each hand-over is a context switch, the worker's Python makes the forward pass
# wait for the GIL, and its memory traffic slows the convolutions (EfficientNet-B0, capture
# until it returns: 1.7-1.9x the forward pass with a wake-up per layer, 1.35-1.45x deferred).
# Every torchvision classifier at 224 px stays below it (VGG-16: 52 MiB), so their compaction
# starts once the forward pass is done, first layer first.
_WAKE_BYTES = 64 << 20
# Copies up to this size are carved from chunks that the worker has touched in advance (or
# that earlier copies used): writing into fresh memory costs a page fault per 4 KiB, which made
# the copies ~5x slower on the 2-core VM (27 MB: 12 ms fresh, 2.5 ms touched; EfficientNet-B0's
# forward pass is ~30 ms).
_CHUNK_BYTES = 4 << 20
# Chunks the worker keeps ready during the forward pass: one once the first chunk is in use, two
# from the second on (a model whose copies fit in one chunk costs one spare chunk only).
_SPARE_CHUNKS = 2
# Larger copies go into buffers the worker is done with when one fits, else fresh memory.
_CHUNK_VALUES = _CHUNK_BYTES // 4


def _workers() -> ThreadPoolExecutor:
    """The compaction threads (see :mod:`fmwidget._pools`). Each capture's work is one
    :meth:`_Compactor._run` job that ends when its copies are done; four threads, so that
    captures in several threads never wait for each other's forward passes."""
    return shared_pool("fmwidget-compact", 4)


class _Chunk:
    """A flat float32 block that copies are carved from; reusable once none is pending."""

    __slots__ = ("data", "pending", "retired")

    def __init__(self, data: torch.Tensor) -> None:
        self.data, self.pending, self.retired = data, 0, False


class _Job:
    """One layer's copy waiting for compaction, and the future of its result."""

    __slots__ = ("buf", "chunk", "copy", "future")

    def __init__(self, buf: torch.Tensor | None, chunk: _Chunk | None, copy: torch.Tensor) -> None:
        self.buf, self.chunk, self.copy, self.future = buf, chunk, copy, Future()


def _touched(values: int) -> torch.Tensor:
    """A fresh flat float32 block with every page already faulted in (one write per 4 KiB)."""
    data = torch.empty(values, dtype=torch.float32)
    data[:: 1024] = 0
    return data


# Chunks whose pages are faulted in, kept between captures (process-wide, at most
# _RESERVE_CHUNKS, 32 MiB): the next capture, e.g. after set_image() or re-running a cell,
# copies into warm memory instead of page-faulting its way through fresh chunks. On the 2-core
# VM that took EfficientNet-B0's capture from 1.39-1.48x to 1.22-1.25x its forward pass
# (benchmarks/README.md). Chunks beyond the bound, and those dropped to stay under
# _PENDING_LIMIT, are freed.
_RESERVE_CHUNKS = 8
_reserve: list[torch.Tensor] = []
_reserve_lock = threading.Lock()


def _from_reserve() -> torch.Tensor | None:
    with _reserve_lock:
        while _reserve:
            data = _reserve.pop()
            if data.numel() == _CHUNK_VALUES:  # (tests change the chunk size)
                return data
    return None


def _warm_chunk() -> torch.Tensor:
    """A chunk's worth of float32 with its pages faulted in: from the reserve, else touched now."""
    data = _from_reserve()
    return _touched(_CHUNK_VALUES) if data is None else data


def _reserved_or_fresh() -> torch.Tensor:
    """A chunk for the copies when no spare is ready: warm from the reserve, else fresh (its
    page faults then happen in the copies, on the forward pass's thread)."""
    data = _from_reserve()
    return torch.empty(_CHUNK_VALUES, dtype=torch.float32) if data is None else data


def _keep_warm(data: torch.Tensor) -> None:
    """Put a chunk no capture uses any more in the reserve, or free it if that is full."""
    with _reserve_lock:
        if len(_reserve) < _RESERVE_CHUNKS and data.numel() == _CHUNK_VALUES:
            _reserve.append(data)


def release_reserve() -> int:
    """Free the warm copy blocks kept between captures; return the bytes released.

    fmwidget keeps at most 32 MiB of them (see ``_RESERVE_CHUNKS``); call this to give that
    memory back at once, e.g. before a memory-hungry training run in the same kernel.

    Examples
    --------
    >>> release_reserve() >= 0
    True
    """
    with _reserve_lock:
        freed = sum(4 * d.numel() for d in _reserve)
        _reserve.clear()
    return freed


class _Compactor:
    """One capture's background compaction of CPU copies, oldest first: one job (:meth:`_run`)
    in the shared compaction threads.

    It holds the copies, the futures of their results and nothing else (no model, no
    Capture). :meth:`close` says that no more work comes; the job then ends once the queue
    is empty (after :meth:`resume` if closed ``paused``). :meth:`cancel` also drops what has not started. A reader that needs a layer
    still queued compacts it itself (:meth:`run_now`) rather than wait behind the others.
    While the forward pass runs, the worker mostly keeps spare chunks ready for the copies.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._jobs: deque[_Job] = deque()
        self._chunk: _Chunk | None = None  # the chunk copies are carved from now
        self._pos = 0  # values of it already carved
        self._spares: list[_Chunk] = []  # touched chunks, ready to carve from
        self._carved = 0  # chunks carved from so far: as many spares are kept, up to 2
        self._free: list[torch.Tensor] = []  # large buffers done with, for reuse
        self._held = 0  # bytes of chunks and large buffers we hold, in any state
        self._queued = 0  # bytes of copies queued and not started
        self._stalled = 0  # hooks waiting for room (back-pressure)
        self._outstanding = 0  # copies made and not yet released: what waiting can free
        self._limit = _PENDING_LIMIT
        self._closed = False
        self._busy = False  # the worker goes on compacting until the queue is empty
        self._worker: Future | None = None  # _run, in the shared compaction threads
        self._paused = False  # closed, but the drain waits for resume()
        self._urgent: _Job | None = None  # queued, to be compacted before the others at once

    # ------------------------------------------------------------------ the forward pass
    def submit(self, a: torch.Tensor, *, then: Callable[[Future], None] | None = None) -> Future:
        """Queue a private float32 contiguous copy of ``a`` (C, H, W) for :func:`_compact_owned`.

        Called by the hooks, from the thread running the forward pass; the copy is taken
        before this returns. With ``then`` (one copy per capture at most) the copy is urgent:
        compacted at once, beside the forward pass, ahead of the others, and ``then(future)``
        runs in the thread that compacted it (registered before the worker can see the job,
        so that it does not run in the hook instead).
        """
        n = a.numel()
        buf, chunk = self._buffer(n)
        job = _Job(buf, chunk, buf[:n].view(a.shape))
        job.copy.copy_(a)  # casts to float32 and makes it contiguous, like .to(float32, copy=True)
        urgent = then is not None
        if urgent:
            job.future.add_done_callback(then)
        with self._cond:
            if self._closed:  # cancelled from another thread meanwhile
                self._release(job)
                job.future.cancel()
                return job.future
            if self._worker is None:
                try:
                    self._worker = _workers().submit(self._run)
                except RuntimeError:  # no thread to be had: compact here, as on other devices
                    job.future.set_running_or_notify_cancel()
                    _settle(job)
                    self._release(job)
                    return job.future
            self._jobs.append(job)
            self._queued += 4 * n
            if urgent:
                self._urgent = job
            if urgent or self._queued >= _WAKE_BYTES:
                self._cond.notify_all()
        return job.future

    def _buffer(self, n: int) -> tuple[torch.Tensor, _Chunk | None]:
        """Room for ``n`` float32 values: carved from a chunk, or a large buffer of its own."""
        with self._cond:
            while True:
                if n <= _CHUNK_VALUES:
                    if self._chunk is not None and self._pos + n <= _CHUNK_VALUES:
                        chunk, start = self._chunk, self._pos
                        self._pos += -(-n // 16) * 16  # 64-byte aligned
                        chunk.pending += 1
                        self._outstanding += 1
                        return chunk.data[start : start + n], chunk
                    if self._chunk is not None:
                        self._retire(self._chunk)
                        self._chunk = None
                    if self._spares:
                        self._chunk, self._pos = self._spares.pop(0), 0
                        self._carved += 1
                        self._cond.notify_all()  # the worker touches another spare
                        continue
                    need = _CHUNK_BYTES
                else:
                    fits = [(b.numel(), i) for i, b in enumerate(self._free) if b.numel() >= n]
                    if fits:  # best fit among the large buffers done with
                        self._outstanding += 1
                        return self._free.pop(min(fits)[1]), None
                    need = 4 * n
                while self._held + need > self._limit and (self._free or self._spares):
                    dropped = self._free.pop(0) if self._free else self._spares.pop(0).data
                    self._held -= 4 * dropped.numel()  # make room
                if self._held + need <= self._limit or not self._outstanding or self._closed:
                    self._held += need
                    if n > _CHUNK_VALUES:
                        self._outstanding += 1
                        return torch.empty(n, dtype=torch.float32), None
                    self._chunk, self._pos = _Chunk(_reserved_or_fresh()), 0
                    self._carved += 1
                    self._cond.notify_all()  # the worker touches spares for the next ones
                    continue
                self._stalled += 1  # back-pressure: wake the worker and wait for room
                self._cond.notify_all()
                self._cond.wait()
                self._stalled -= 1

    def close(self, *, paused: bool = False) -> None:
        """No more work comes: the worker compacts what is queued and exits. With ``paused``
        it waits for :meth:`resume` first (readers still compact what they need themselves)."""
        with self._cond:
            self._closed = True
            self._paused = paused
            self._drop_spares()
            self._cond.notify_all()

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def cancel(self) -> None:
        """Like :meth:`close`, and cancel every job that has not started."""
        with self._cond:
            self._closed = True
            self._paused = False
            self._urgent = None
            while self._jobs:
                job = self._jobs.popleft()
                self._queued -= 4 * job.copy.numel()
                self._release(job)
                job.future.cancel()
            self._drop_spares()
            self._cond.notify_all()

    # ------------------------------------------------------------------ the readers
    def run_now(self, future: Future) -> None:
        """Compact ``future``'s layer in this thread if it is still queued, else do nothing."""
        with self._cond:
            job = next((j for j in self._jobs if j.future is future), None)
            if job is None:
                return
            self._dequeue(job)
        self._finish(job)

    def _dequeue(self, job: _Job) -> None:
        """Take ``job`` off the queue (under the lock): it is about to be compacted."""
        self._jobs.remove(job)
        self._queued -= 4 * job.copy.numel()
        if job is self._urgent:
            self._urgent = None

    def drain(self) -> None:
        """Compact every queued job, newest first, in this thread beside the worker.

        The worker takes the oldest, so the two meet in the middle instead of taking turns
        on every layer (each turn a wake-up: slower than compacting a small layer).
        """
        while True:
            with self._cond:
                if not self._jobs:
                    return
                job = self._jobs[-1]
                self._dequeue(job)
            self._finish(job)

    # ------------------------------------------------------------------ the worker
    def _run(self) -> None:
        while True:
            touch = False
            with self._cond:
                while True:
                    if self._urgent is not None:  # not the oldest, nor the start of a drain
                        job = self._urgent
                        self._dequeue(job)
                        break
                    draining = self._closed and not self._paused
                    awake = self._busy or draining or self._stalled or self._queued >= _WAKE_BYTES
                    if self._jobs and awake:
                        self._busy = True
                        job = self._jobs.popleft()
                        self._queued -= 4 * job.copy.numel()
                        break
                    if self._closed and not self._jobs:
                        return
                    self._busy = False
                    room = self._held + _CHUNK_BYTES <= self._limit
                    spares = min(_SPARE_CHUNKS, self._carved)
                    if not self._closed and len(self._spares) < spares and room:
                        self._held += _CHUNK_BYTES
                        touch = True
                        break
                    self._cond.wait()
            if touch:  # page faults here, on this core, rather than in the copies
                spare = _Chunk(_warm_chunk())
                with self._cond:
                    if self._closed:
                        self._held -= _CHUNK_BYTES
                        _keep_warm(spare.data)
                    else:
                        self._spares.append(spare)
                del spare
                continue
            self._finish(job)
            del job

    def _finish(self, job: _Job) -> None:
        """Compact ``job`` unless cancelled, then release its memory."""
        if job.future.set_running_or_notify_cancel():
            _settle(job)
        with self._cond:
            self._release(job)
            self._cond.notify_all()  # a hook may be waiting for room

    # ------------------------------------------------------------------ bookkeeping (locked)
    def _release(self, job: _Job) -> None:
        """The job's copy is no longer needed: recycle or free its memory."""
        job.copy = None
        self._outstanding -= 1
        if job.chunk is not None:
            job.chunk.pending -= 1
            if job.chunk.retired and not job.chunk.pending:
                self._recycle(job.chunk)
        elif self._closed:
            self._held -= 4 * job.buf.numel()
        else:
            self._free.append(job.buf)
        job.buf = job.chunk = None

    def _retire(self, chunk: _Chunk) -> None:
        chunk.retired = True
        if not chunk.pending:
            self._recycle(chunk)

    def _recycle(self, chunk: _Chunk) -> None:
        """A retired chunk with nothing pending: a spare again (its pages are touched)."""
        if not self._closed and len(self._spares) < _SPARE_CHUNKS:
            chunk.retired = False
            self._spares.append(chunk)
        else:
            self._held -= _CHUNK_BYTES
            _keep_warm(chunk.data)

    def _drop_spares(self) -> None:
        self._held -= _CHUNK_BYTES * len(self._spares)
        for spare in self._spares:
            _keep_warm(spare.data)
        self._spares.clear()
        self._held -= 4 * sum(b.numel() for b in self._free)
        self._free.clear()
        if self._chunk is not None:
            self._retire(self._chunk)
            self._chunk = None


def _settle(job: _Job) -> None:
    """Run :func:`_compact_owned` on the job's copy; put its result or its error in the future.

    Whatever the error (also a KeyboardInterrupt in a reader compacting a layer itself, after
    which the copy, overwritten in place, is lost), it goes into the future: nobody may wait
    forever, and the worker thread must not die with jobs queued.
    """
    try:
        job.future.set_result(_compact_owned(job.copy))
    except BaseException as err:
        # The traceback's frames would keep the float32 copy alive as long as the error is
        # stored; keep the lines, drop the locals.
        traceback.clear_frames(err.__traceback__)
        job.future.set_exception(err)


def _weight_info(module: nn.Module) -> tuple[tuple[int, ...] | None, bool]:
    if isinstance(module, nn.Conv2d):
        shape = tuple(module.weight.shape)
        depthwise = module.groups > 1 and module.groups == module.in_channels and shape[1] == 1
        return shape, depthwise
    return None, False


class ModelError(ValueError, RuntimeError):
    """The user's model raised on the input. A ValueError (the model and input do not fit
    together) that is also a RuntimeError, as torch's own errors are; the cause is chained."""


def _model_input(model: nn.Module, x: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """``x`` on ``dev`` in the model's floating dtype (float16/bfloat16/float64 models work)."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if tensor.is_floating_point():
            return x.to(device=dev, dtype=tensor.dtype)
    return x.to(dev)


@contextlib.contextmanager
def model_errors(doing: str, hint: str) -> Iterator[None]:
    """Report an exception from the user's model as a :class:`ModelError` naming what we were
    ``doing`` and a ``hint``; our own early stop (``_StopForward``) passes through."""
    try:
        yield
    except _StopForward:
        raise
    except Exception as err:  # the user's model raised: say where, keep the cause
        raise ModelError(f"model: {doing} raised {type(err).__name__}: {err}. {hint}") from err


def _forward(model: nn.Module, x: torch.Tensor) -> Any:
    hint = (
        f"Check that the model accepts a (1, 3, H, W) image tensor of shape {tuple(x.shape)}; for "
        f"another input size pass a transform= or a tensor of the right size."
    )
    with model_errors("its forward pass", hint):
        return model(x)


class Early:
    """Work on one layer's output that starts beside the forward pass, as soon as that layer is
    compacted (in a background thread), instead of after the pass.

    The widget builds its first picture this way: on a 2-core machine that hides most of the
    picture's 3 to 5 ms behind the rest of the forward pass.

    Parameters
    ----------
    fn : callable
        ``fn(cap)``, given a :class:`Capture` of that one layer (its ``LayerInfo.calls`` is 1);
        called in a background thread, so it must not touch the model. Its return value or
        exception goes to :attr:`result`.
    layer : str, optional
        The layer; default: the first offered layer that runs.

    Attributes
    ----------
    result : concurrent.futures.Future
        Cancelled if the layer did not run, its output is not on the CPU (others compact in
        the hook) or the capture failed. It may still be pending when :func:`capture` returns
        (the layer not compacted yet): ``result.cancel()`` then stops it, and reading the
        layer compacts it in the reader's thread as usual.

    Examples
    --------
    >>> import torchvision
    >>> early = Early(lambda one: one.names[0])
    >>> cap = capture(torchvision.models.resnet18(weights=None), torch.rand(1, 3, 64, 64), early=early)
    >>> early.result.result()
    'conv1'
    """

    def __init__(self, fn: Callable[[Capture], Any], layer: str | None = None) -> None:
        self.fn, self.layer, self.result = fn, layer, Future()

    def _start(self, info: LayerInfo, done: Future) -> None:
        """Done-callback of the layer's compaction (runs in the thread that compacted it)."""
        if done.cancelled():  # the capture failed or was cleared first
            self.result.cancel()
            return
        if not self.result.set_running_or_notify_cancel():
            return
        try:
            one = Capture(layers=[info], _store={info.name: done.result()})
            self.result.set_result(self.fn(one))
        except BaseException as err:  # noqa: BLE001 - the caller gets it from result
            traceback.clear_frames(err.__traceback__)
            self.result.set_exception(err)


def capture(
    model: nn.Module,
    x: torch.Tensor,
    layers: Any = None,
    *,
    device: torch.device | str | None = None,
    defer: bool = False,
    early: Early | None = None,
) -> Capture:
    """Run ``model`` once on ``x`` and keep every offered layer's output in compact form.

    Parameters
    ----------
    model : torch.nn.Module
        Any module; it stays on its device and comes back in its own mode.
    x : torch.Tensor
        The (1, 3, H, W) model input, on any device (it is moved to the model's).
    layers : None, "all" or list of str
        None offers every ``nn.Conv2d`` with a 4-D output; "all" every module with a 4-D
        output; a list names modules from ``model.named_modules()``.
    device : torch.device or str, optional
        Where the input goes; must agree with the model's parameters.
    defer : bool, optional
        On the CPU, start compacting the layers nobody has read yet only at
        :meth:`Capture.resume` (default: as soon as the forward pass is done).
    early : Early, optional
        Work on one layer to start beside the forward pass, as soon as that layer is compacted.

    Returns
    -------
    Capture

    Examples
    --------
    >>> import torchvision
    >>> cap = capture(torchvision.models.resnet18(weights=None), torch.rand(1, 3, 64, 64))
    >>> cap.names[0], tuple(cap.maps("conv1").shape)
    ('conv1', (64, 32, 32))
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    dev = _check_device(model, device)
    candidates, explicit = _candidates(model, layers)
    calls: Counter = Counter()
    order: list[str] = []
    shapes: dict[str, tuple] = {}
    store: dict[str, _Stored | Future] = {}
    not_4d: dict[str, str] = {}
    compactor = _Compactor()
    early_seen: list[str] = []  # the early layer, once its output arrived

    def hook(module: nn.Module, _inputs: Any, out: Any) -> None:  # returns None: output untouched
        name = candidates[module]
        calls[name] += 1
        if calls[name] > 1:
            return
        if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[0] >= 1:
            order.append(name)
            shapes[name] = tuple(out.shape[1:])
            if out.device.type == "cpu":
                # A private float32 copy now (an in-place op later in the pass may change the
                # output), compacted by the worker while the forward pass goes on.
                then = None
                if early is not None and early.layer in (None, name) and not early_seen:
                    early_seen.append(name)
                    weight_shape, depthwise = _weight_info(module)
                    info = LayerInfo(name, type(module).__name__, shapes[name], weight_shape, 1, depthwise)
                    then = functools.partial(early._start, info)
                store[name] = compactor.submit(out[0].detach(), then=then)
            else:
                store[name] = _compact(out)
        else:
            not_4d[name] = (
                f"a {out.dim()}-D tensor {tuple(out.shape)}"
                if isinstance(out, torch.Tensor)
                else f"a {type(out).__name__}"
            )

    try:
        with model_state(model, eval_mode=True) as handles, torch.no_grad():
            for module in candidates:
                handles.append(module.register_forward_hook(hook))
            output = _forward(model, _model_input(model, x, dev))
        # The worker exits once it has compacted what it holds; with defer, it starts on that
        # only at Capture.resume() (readers compact what they read themselves meanwhile).
        compactor.close(paused=defer)
        if early is not None and not early_seen:
            early.result.cancel()  # the layer did not run, or not on the CPU
        if explicit:
            for module, name in candidates.items():
                if name in not_4d:
                    raise ValueError(
                        f"layers: {name!r} ({type(module).__name__}) outputs {not_4d[name]}, not a "
                        f"(N, C, H, W) feature map; pick modules with spatial outputs."
                    )
                if not calls[name]:
                    raise ValueError(
                        f"layers: {name!r} did not run during the forward pass, so it has no output; "
                        f"pick modules that the model's forward() calls."
                    )
        if not order and layers is None:
            raise ValueError(
                "model: none of its nn.Conv2d layers produced a 4-D (N, C, H, W) output during the "
                "forward pass. Pass layers='all' or a list of module names with spatial outputs."
            )
        if not order:
            raise ValueError(
                "model: none of its modules produced a 4-D (N, C, H, W) output during the forward "
                "pass, so there are no feature maps to show; fmwidget needs a CNN that takes an "
                "image. Check that forward() uses its modules on the (1, 3, H, W) input."
            )
        by_name = {n: m for m, n in candidates.items()}
        infos = []
        for name in order:
            weight_shape, depthwise = _weight_info(by_name[name])
            infos.append(
                LayerInfo(
                    name=name,
                    type=type(by_name[name]).__name__,
                    out_shape=shapes[name],
                    weight_shape=weight_shape,
                    calls=calls[name],
                    depthwise=depthwise,
                )
            )
        return Capture(layers=infos, output=_detach_output(output), _store=store, _compactor=compactor)
    except BaseException:
        # The model or the layer checks failed: drop the pending work (the worker exits once
        # the copy in its hands is done).
        compactor.cancel()
        if early is not None:
            early.result.cancel()
        raise


def _detach_output(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output.detach().float().cpu()
    if isinstance(output, (list, tuple)) and not hasattr(output, "_fields"):
        return type(output)(_detach_output(o) for o in output)
    if isinstance(output, dict):
        return {k: _detach_output(v) for k, v in output.items()}
    return output


class _StopForward(Exception):
    """Raised from a hook once the wanted output is captured, to skip the rest of the pass."""


def exact_activation(
    model: nn.Module, x: torch.Tensor, name: str, *, device: torch.device | str | None = None
) -> torch.Tensor:
    """The exact float32 output of module ``name`` for input ``x`` (first call), on the CPU.

    Runs the model up to that module only, with one hook that copies the output before any
    in-place operation after it can change it.
    """
    dev = _check_device(model, device)
    module = dict(model.named_modules()).get(name)
    if module is None or not name:
        resolve_layer([n for n, _ in model.named_modules() if n], name)
    kept: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: Any, out: Any) -> None:
        if not kept and isinstance(out, torch.Tensor):
            kept.append(out[0].detach().to(device="cpu", dtype=torch.float32, copy=True))
            raise _StopForward

    with model_state(model, eval_mode=True) as handles, torch.no_grad():
        handles.append(module.register_forward_hook(hook))
        try:
            _forward(model, _model_input(model, x, dev))
        except _StopForward:
            pass
    if not kept:
        raise ValueError(f"layer {name!r} produced no tensor output during the forward pass.")
    return kept[0]
