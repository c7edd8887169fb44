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
"""

from __future__ import annotations

import contextlib
import difflib
import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

__all__ = [
    "Capture",
    "LayerInfo",
    "ModelError",
    "capture",
    "exact_activation",
    "model_device",
    "model_state",
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
    """

    layers: list[LayerInfo]
    output: Any = None
    _store: dict[str, _Stored] = field(default_factory=dict, repr=False)

    @property
    def names(self) -> list[str]:
        return [info.name for info in self.layers]

    def info(self, name: str) -> LayerInfo:
        for info in self.layers:
            if info.name == name:
                return info
        raise KeyError(name)

    def maps(self, name: str) -> torch.Tensor:
        """(C, H, W) uint8 codes of the layer's output: ``code * stats['scale'] + stats['offset']``.

        Code 255 is NaN; +Inf and -Inf sit at the channel's ends. Use :meth:`values` for the
        decoded float32 values of some channels.
        """
        return self._store[name].codes

    def values(self, name: str, channels: Sequence[int] | None = None) -> torch.Tensor:
        """Float32 (n, H, W) values of ``channels`` (default all), decoded from the codes.

        Each value is within half a step, ``(max - min) / 508``, of the true output.
        """
        s = self._store[name]
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
        s = self._store[name]
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
        """Bytes held for the views (uint8 codes plus the exact per-channel min and max)."""
        return sum(s.codes.numel() + s.vmin.nbytes + s.vmax.nbytes for s in self._store.values())

    def clear(self) -> None:
        self._store.clear()
        self.output = None


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a stateless model."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def model_state(model: nn.Module) -> Iterator[list]:
    """Snapshot the model's mode and ``requires_grad`` flags; restore them and remove hooks.

    Yields a list: append every hook handle to it and it is removed on exit, whatever happens.
    Each module's own ``training`` flag is restored (a model with mixed train/eval modules
    comes back mixed), without calling ``train()``, which would overwrite children.
    """
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    handles: list = []
    try:
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


def capture(
    model: nn.Module,
    x: torch.Tensor,
    layers: Any = None,
    *,
    device: torch.device | str | None = None,
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
    store: dict[str, _Stored] = {}
    not_4d: dict[str, str] = {}

    def hook(module: nn.Module, _inputs: Any, out: Any) -> None:  # returns None: output untouched
        name = candidates[module]
        calls[name] += 1
        if calls[name] > 1:
            return
        if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[0] >= 1:
            order.append(name)
            shapes[name] = tuple(out.shape[1:])
            store[name] = _compact(out)
        else:
            not_4d[name] = (
                f"a {out.dim()}-D tensor {tuple(out.shape)}"
                if isinstance(out, torch.Tensor)
                else f"a {type(out).__name__}"
            )

    with model_state(model) as handles, torch.no_grad():
        model.eval()
        for module in candidates:
            handles.append(module.register_forward_hook(hook))
        output = _forward(model, _model_input(model, x, dev))

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
    return Capture(layers=infos, output=_detach_output(output), _store=store)


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

    with model_state(model) as handles, torch.no_grad():
        model.eval()
        handles.append(module.register_forward_hook(hook))
        try:
            _forward(model, _model_input(model, x, dev))
        except _StopForward:
            pass
    if not kept:
        raise ValueError(f"layer {name!r} produced no tensor output during the forward pass.")
    return kept[0]
