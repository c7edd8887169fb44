"""Running the user's model with gradients, and putting it back: what attribution shares.

:func:`attribution_mode` puts the model in the state attribution needs (eval mode, no weight
gradients, ``nn.ReLU`` modules not in place, gradients on) and restores it exactly, hooks
included, also when something raises. The checks here give every attribution function the
same messages.
"""

from __future__ import annotations

import contextlib
import difflib
import operator
from collections.abc import Iterator

import torch
from torch import nn

from .modelstate import (
    StopForward,
    check_device,
    model_errors,
    model_input,
    model_state,
)

__all__ = [
    "as_index",
    "attribution_mode",
    "capture_hook",
    "check_activation",
    "check_input",
    "find_module",
    "gradient_errors",
    "prepared_input",
]


def check_input(x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"x must be a torch.Tensor of shape (1, 3, H, W), got {type(x).__name__}; "
            "prepare the image with fmwidget.preprocess.prepare_input first."
        )
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(
            f"x must have shape (1, C, H, W) (one image), got {tuple(x.shape)}; "
            "add a batch dimension with x[None] or pass a single image."
        )
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}; use x.float().")


def as_index(value, argname: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{argname} must be an int, got a bool ({value!r}).")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{argname} must be an int, got {type(value).__name__} ({value!r}).") from None


def find_module(model: nn.Module, name) -> nn.Module:
    if not isinstance(name, str):
        raise TypeError(f"name must be a module name (str), got {type(name).__name__}.")
    modules = dict(model.named_modules())
    if name not in modules:
        close = difflib.get_close_matches(name, list(modules), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"name {name!r} is not a module of this model.{hint} "
            "Valid names are those of model.named_modules()."
        )
    return modules[name]


def check_activation(act, name: str, *, spatial: bool) -> None:
    wanted = "(1, C, H, W)" if spatial else "(1, C, H, W) or (1, C)"
    ok = isinstance(act, torch.Tensor) and act.shape[:1] == (1,) and (
        act.ndim == 4 or (not spatial and act.ndim == 2)
    )
    if not ok:
        got = tuple(act.shape) if isinstance(act, torch.Tensor) else type(act).__name__
        raise ValueError(
            f"layer {name!r} outputs {got}, not a tensor of shape {wanted}; "
            "choose a convolutional layer (one with spatial feature maps)."
        )


def prepared_input(model: nn.Module, x: torch.Tensor, device) -> torch.Tensor:
    """A private leaf copy of ``x`` on the model's device and dtype (the capture's own checks).

    The caller's tensor keeps its requires_grad and .grad.
    """
    dev = check_device(model, device)
    return model_input(model, x.detach(), dev).clone().requires_grad_(True)


@contextlib.contextmanager
def attribution_mode(model: nn.Module) -> Iterator[list]:
    """Put ``model`` in the state attribution needs and restore it exactly on exit.

    Inside: eval mode, parameters without ``requires_grad`` (no weight
    gradients are computed or stored), ``nn.ReLU`` modules with
    ``inplace=False``, gradients enabled. Yields a list to which callers
    append hook handles; they are removed on exit, also on an exception.
    Modes, ``requires_grad`` flags and hooks are restored by
    :func:`fmwidget.modelstate.model_state`; the ``inplace`` flags here.
    """
    inplace = [(m, m.inplace) for m in model.modules() if isinstance(m, nn.ReLU)]
    with model_state(model, eval_mode=True) as handles:
        try:
            for p in model.parameters():
                p.requires_grad_(False)
            for m, _ in inplace:
                m.inplace = False
            with torch.inference_mode(False), torch.enable_grad():
                yield handles
        finally:
            for m, flag in inplace:
                m.inplace = flag


def gradient_errors():
    """Report an error of the user's model (its forward or its backward) as a ModelError."""
    return model_errors(
        "it, while computing gradients for attribution,",
        "The model must run on a (1, 3, H, W) input with gradients enabled, without in-place "
        "changes to tensors autograd needs; choose another layer or fix forward().",
    )


def capture_hook(store: dict, *, stop: bool):
    """Forward hook keeping the first call's output of a module in ``store["act"]``."""

    def hook(module, inputs, output):
        if "act" in store:
            return None
        store["act"] = output
        if stop:
            raise StopForward
        if isinstance(output, torch.Tensor):
            # The rest of the model gets a copy, so a later in-place op
            # (ResNet's ``out += identity``) cannot alter the captured tensor.
            return output.clone()
        return None

    return hook
