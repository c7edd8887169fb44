"""Models by name, their weights and categories, and the bundled offline defaults."""

from __future__ import annotations

import contextlib
import difflib
import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

__all__ = ["ResolvedModel", "demo_model", "load_model", "pretrained_squeezenet", "resolve_model", "sample_image"]

DATA = Path(__file__).resolve().parent / "data"
SQUEEZENET_WEIGHTS = DATA / "squeezenet1_0-imagenet-fp16.pth"
SAMPLE_IMAGE = DATA / "chelsea.jpg"
_DOWNLOAD_TIMEOUT_S = 30


@dataclass
class ResolvedModel:
    """A model with what belongs to it: a display name, its preprocessing, its class names."""

    module: nn.Module
    name: str
    transform: Callable | None = None
    labels: list[str] | None = None
    notes: list[str | dict] = field(default_factory=list)


def _classification_names() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _unknown_name(name: str) -> ValueError:
    names = torchvision.models.list_models()
    close = difflib.get_close_matches(name.lower(), names, n=4, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(
        f"model={name!r} is not a torchvision model name.{hint} The names are those of "
        f"torchvision.models.list_models(), e.g. 'resnet50', 'vgg16', 'efficientnet_b0'; or pass "
        f"any torch.nn.Module."
    )


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    # torch.hub's download has no timeout of its own: bound it so an offline kernel never hangs.
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def load_model(name: str, *, device: torch.device | str | None = None) -> ResolvedModel:
    """Build torchvision model ``name`` with its default pretrained weights.

    Parameters
    ----------
    name : str
        A name from ``torchvision.models.list_models()``.
    device : torch.device or str, optional
        Where to put the model (default CPU).

    Raises
    ------
    ValueError
        For an unknown name (with close suggestions).
    ConnectionError
        When the weights are not cached and cannot be downloaded (offline).

    Examples
    --------
    >>> rm = load_model("resnet18")  # doctest: +SKIP
    >>> rm.labels[:2]  # doctest: +SKIP
    ['tench', 'goldfish']
    """
    from .preprocess import from_torchvision

    if name not in torchvision.models.list_models():
        raise _unknown_name(name)
    weights = torchvision.models.get_model_weights(name).DEFAULT
    try:
        with _socket_timeout(_DOWNLOAD_TIMEOUT_S):
            module = torchvision.models.get_model(name, weights=weights)
    except (OSError, RuntimeError) as err:  # URLError, timeouts and hub errors
        raise ConnectionError(
            f"model={name!r}: its pretrained weights ({weights}) are not in the torch hub cache and "
            f"could not be downloaded ({type(err).__name__}: {err}). Offline, pass a module instead: "
            f"torchvision.models.{name}(weights=None) for random weights, or build it that way and "
            f"call .load_state_dict(torch.load('weights.pth')) with a local state dict. "
            f"fmwidget.pretrained_squeezenet() is a trained model that works offline."
        ) from err
    if device is not None:
        module = module.to(device)
    module.eval()
    labels = list(weights.meta.get("categories") or []) or None
    return ResolvedModel(module, name, from_torchvision(weights.transforms()), labels)


def pretrained_squeezenet(device: torch.device | str | None = None) -> nn.Module:
    """SqueezeNet 1.0 with real ImageNet weights bundled in the package (works offline).

    Use it with :func:`fmwidget.caffe_transform` (its weights expect Caffe-style input) and
    the ImageNet class names, which :func:`resolve_model` does for you when you pass
    ``model="squeezenet"``.

    Examples
    --------
    >>> m = pretrained_squeezenet()
    >>> tuple(m.features[0].weight.shape)
    (96, 3, 7, 7)
    """
    state = torch.load(SQUEEZENET_WEIGHTS, map_location="cpu", weights_only=True)
    module = torchvision.models.squeezenet1_0(weights=None)
    module.load_state_dict({k: v.float() for k, v in state.items()})
    module.eval()
    return module.to(device) if device is not None else module


def _squeezenet_resolved(device=None, notes=()) -> ResolvedModel:
    from .preprocess import caffe_transform

    labels = list(torchvision.models.SqueezeNet1_0_Weights.IMAGENET1K_V1.meta["categories"])
    return ResolvedModel(
        pretrained_squeezenet(device),
        "squeezenet1_0 (bundled ImageNet weights)",
        caffe_transform(),
        labels,
        list(notes),
    )


def resolve_model(model: Any, *, device: torch.device | str | None = None) -> ResolvedModel:
    """Turn the ``model`` argument into a :class:`ResolvedModel`.

    A module is used as it is (it is never moved or copied). A string is a torchvision name,
    loaded with its default weights, or ``"squeezenet"`` for the bundled trained SqueezeNet. A
    :class:`ResolvedModel` (from :func:`demo_model` or :func:`load_model`) is used as it is.
    """
    if isinstance(model, ResolvedModel):  # e.g. demo_model(): keeps its name, transform, labels
        return model
    if isinstance(model, nn.Module):
        return ResolvedModel(model, type(model).__name__)
    if isinstance(model, str):
        if model == "squeezenet":
            return _squeezenet_resolved(device)
        return load_model(model, device=device)
    raise TypeError(
        f"model must be a torch.nn.Module or a torchvision model name (str), got "
        f"{type(model).__name__} {model!r}. For example: torchvision.models.resnet18(weights=None)."
    )


def demo_model(name: str = "resnet18") -> ResolvedModel:
    """The demo's model: torchvision ``name`` with pretrained weights, or, offline, SqueezeNet.

    When the weights cannot be downloaded this says so with a warning and falls back to the
    bundled ImageNet-trained SqueezeNet 1.0.
    """
    try:
        return load_model(name)
    except ConnectionError as err:
        text = f"Offline: showing the bundled ImageNet-trained SqueezeNet 1.0 instead of {name}."
        details = f"torchvision's pretrained {name} weights could not be downloaded: {err.__cause__!r}"
        warnings.warn(f"{text} ({details})", stacklevel=2)
        return _squeezenet_resolved(notes=[{"text": text, "details": details}])


def sample_image():
    """The bundled sample photo (Chelsea the cat, from scikit-image's sample data) as a PIL image.

    Examples
    --------
    >>> sample_image().size
    (451, 300)
    """
    from PIL import Image

    with Image.open(SAMPLE_IMAGE) as img:
        return img.convert("RGB")
