"""The user's model: its device, its input dtype, its state, and its errors.

Everything fmwidget does to a model goes through :func:`model_state`, which restores it
exactly: hooks are removed, every module's ``training`` flag and every parameter's
``requires_grad`` flag come back as they were, also when the forward pass raises.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["ModelError", "StopForward", "check_device", "model_device", "model_errors", "model_input", "model_state"]


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


def check_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
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
            "device='meta' holds no values, so there is nothing to show. fmwidget never moves "
            "your model: pass device=None (the input follows the model) or the device the "
            "model's parameters are on, e.g. 'cpu'."
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


class ModelError(ValueError, RuntimeError):
    """The user's model raised on the input. A ValueError (the model and input do not fit
    together) that is also a RuntimeError, as torch's own errors are; the cause is chained."""


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The model's floating dtype (its first floating parameter or buffer), or None."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return None


def model_input(model: nn.Module, x: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """``x`` on ``dev`` in the model's floating dtype (float16/bfloat16/float64 models work)."""
    dtype = model_dtype(model)
    return x.to(device=dev, dtype=dtype) if dtype is not None else x.to(dev)


@contextlib.contextmanager
def model_errors(doing: str, hint: str) -> Iterator[None]:
    """Report an exception from the user's model as a :class:`ModelError` naming what we were
    ``doing`` and a ``hint``; our own early stop (``StopForward``) passes through."""
    try:
        yield
    except StopForward:
        raise
    except Exception as err:  # the user's model raised: say where, keep the cause
        raise ModelError(f"model: {doing} raised {type(err).__name__}: {err}. {hint}") from err


def forward(model: nn.Module, x: torch.Tensor) -> Any:
    hint = (
        f"Check that the model accepts a (1, 3, H, W) image tensor of shape {tuple(x.shape)}; for "
        f"another input size pass a transform= or a tensor of the right size."
    )
    with model_errors("its forward pass", hint):
        return model(x)


class StopForward(Exception):
    """Raised from a hook once the wanted output is captured, to skip the rest of the pass."""
