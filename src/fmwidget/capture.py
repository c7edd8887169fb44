"""Layer discovery, forward hooks and the one forward pass.

:func:`capture` runs the model once with a forward hook on every offered layer. Each hook
encodes its layer's output at once (:func:`fmwidget.codes.encode`: uint8 codes with exact
per-channel float32 ranges, a quarter of the float32 size), before an in-place operation later
in the pass (``ReLU(inplace=True)``, ``out += identity``) can change it. There is no background
work: when :func:`capture` returns, everything is encoded.

The model is restored exactly (:func:`fmwidget.modelstate.model_state`), also when the forward
pass raises.

Reused modules
--------------
A module that runs more than once in one forward pass (the ReLU of a torchvision ResNet block
runs three times) is captured at its **first** call, both for the views and for
:func:`exact_activation`. :attr:`LayerInfo.calls` records how many calls there were, so the
widget can say so.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .codes import Codes, decode, encode
from .modelstate import (  # ModelError, model_device, model_state, check_device: re-exported
    ModelError,
    StopForward,
    check_device,
    forward,
    model_device,
    model_input,
    model_state,
)

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


@dataclass
class Capture:
    """The result of one forward pass: every offered layer's output as :class:`~fmwidget.codes.Codes`.

    The views read :meth:`codes` (uint8 codes, each channel linear between its own exact float32
    min and max, 255 levels). Exact float32 activations come from :func:`exact_activation`.
    """

    layers: list[LayerInfo]
    output: Any = None
    _store: dict[str, Codes] = field(default_factory=dict, repr=False)

    @property
    def names(self) -> list[str]:
        return [info.name for info in self.layers]

    def info(self, name: str) -> LayerInfo:
        for info in self.layers:
            if info.name == name:
                return info
        raise KeyError(name)

    def codes(self, name: str) -> Codes:
        """The layer's codes and exact per-channel ranges."""
        return self._store[name]

    def maps(self, name: str) -> torch.Tensor:
        """(C, H, W) uint8 codes of the layer's output (see :mod:`fmwidget.codes`)."""
        return self._store[name].codes

    def values(self, name: str, channels: Sequence[int] | None = None) -> torch.Tensor:
        """Float32 (n, H, W) values of ``channels`` (default all), decoded from the codes.

        Each value is within half a step, ``(max - min) / 508``, of the true output.
        """
        return decode(self._store[name], channels)

    def stats(self, name: str) -> dict:
        """Exact float32 per-channel ``min`` and ``max`` (finite values only) and ``finite``."""
        c = self._store[name]
        return {"min": c.vmin, "max": c.vmax, "finite": c.finite}

    @property
    def nbytes(self) -> int:
        """Bytes held for the views (uint8 codes plus the exact per-channel min and max)."""
        return sum(c.nbytes for c in self._store.values())

    def clear(self) -> None:
        """Drop every layer's codes and the model output."""
        self._store.clear()
        self.output = None


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


def weight_info(module: nn.Module) -> tuple[tuple[int, ...] | None, bool]:
    """The conv weight's shape (None for a module without one) and whether it is depthwise."""
    if isinstance(module, nn.Conv2d):
        shape = tuple(module.weight.shape)
        depthwise = module.groups > 1 and module.groups == module.in_channels and shape[1] == 1
        return shape, depthwise
    return None, False


def capture(model: nn.Module, x: torch.Tensor, layers: Any = None, *, device: torch.device | str | None = None) -> Capture:
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
    dev = check_device(model, device)
    candidates, explicit = _candidates(model, layers)
    calls: Counter = Counter()
    store: dict[str, Codes] = {}
    not_4d: dict[str, str] = {}

    def hook(module: nn.Module, _inputs: Any, out: Any) -> None:  # returns None: output untouched
        name = candidates[module]
        calls[name] += 1
        if calls[name] > 1:
            return
        if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[0] >= 1:
            store[name] = encode(out[0].detach())
        else:
            not_4d[name] = (
                f"a {out.dim()}-D tensor {tuple(out.shape)}" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
            )

    with model_state(model, eval_mode=True) as handles, torch.no_grad():
        for module in candidates:
            handles.append(module.register_forward_hook(hook))
        output = forward(model, model_input(model, x, dev))
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
    if not store and layers is None:
        raise ValueError(
            "model: none of its nn.Conv2d layers produced a 4-D (N, C, H, W) output during the "
            "forward pass. Pass layers='all' or a list of module names with spatial outputs."
        )
    if not store:
        raise ValueError(
            "model: none of its modules produced a 4-D (N, C, H, W) output during the forward "
            "pass, so there are no feature maps to show; fmwidget needs a CNN that takes an "
            "image. Check that forward() uses its modules on the (1, 3, H, W) input."
        )
    by_name = {n: m for m, n in candidates.items()}
    infos = []
    for name, c in store.items():  # dicts keep insertion order: the forward-execution order
        weight_shape, depthwise = weight_info(by_name[name])
        infos.append(LayerInfo(name, type(by_name[name]).__name__, tuple(c.codes.shape), weight_shape, calls[name], depthwise))
    return Capture(layers=infos, output=_detach_output(output), _store=store)


def _detach_output(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output.detach().float().cpu()
    if isinstance(output, (list, tuple)) and not hasattr(output, "_fields"):
        return type(output)(_detach_output(o) for o in output)
    if isinstance(output, dict):
        return {k: _detach_output(v) for k, v in output.items()}
    return output


def exact_activation(
    model: nn.Module, x: torch.Tensor, name: str, *, device: torch.device | str | None = None
) -> torch.Tensor:
    """The exact float32 output of module ``name`` for input ``x`` (first call), on the CPU.

    Runs the model up to that module only, with one hook that copies the output before any
    in-place operation after it can change it.
    """
    dev = check_device(model, device)
    module = dict(model.named_modules()).get(name)
    if module is None or not name:
        resolve_layer([n for n, _ in model.named_modules() if n], name)
    kept: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: Any, out: Any) -> None:
        if not kept and isinstance(out, torch.Tensor):
            kept.append(out[0].detach().to(device="cpu", dtype=torch.float32, copy=True))
            raise StopForward

    with model_state(model, eval_mode=True) as handles, torch.no_grad():
        handles.append(module.register_forward_hook(hook))
        try:
            forward(model, model_input(model, x, dev))
        except StopForward:
            pass
    if not kept:
        raise ValueError(f"layer {name!r} produced no tensor output during the forward pass.")
    return kept[0]


def weight(model: nn.Module, name: str) -> torch.Tensor | None:
    """Layer ``name``'s conv weight as a float32 CPU tensor (a view where possible), or None."""
    module = model.get_submodule(name)
    if not isinstance(module, nn.Conv2d):
        return None
    return module.weight.detach().to(device="cpu", dtype=torch.float32)
