"""What the network looks at: guided backpropagation, Grad-CAM and predictions.

Guided backpropagation of a channel (:func:`guided_backprop`) shows what in *this* image
makes the channel fire. With ``a_c`` the channel's map at the layer, it is the gradient with
respect to the input of ``<stop_grad(relu(a_c)), a_c>``: backpropagation starts from the
channel's own rectified response (``relu(a_c)`` on the channel, held constant, and 0 on every
other channel), and every ``nn.ReLU`` module on the way back passes only positive gradients
where its input was positive (Springenberg et al., 2015). Positions where the channel fires
strongly weigh most; a channel that fires nowhere falls back to its strongest position. With
``position=(i, j)`` (or ``"max"``) it is the guided backpropagation of the single neuron
``a[c, i, j]``, as captum's ``NeuronGuidedBackprop``. The plain sum ``a_c.sum()`` is not used:
for a first convolution its gradient is the filter tiled at the stride, the same for every
image.

Every function here is pure with respect to the model: it runs the model in
eval mode with its own temporary hooks and settings and restores all of them
(hooks, ``inplace`` flags of ``nn.ReLU`` modules, ``requires_grad`` of the
parameters, per-module ``training`` flags) before it returns, also when it
raises. Gradients are taken with :func:`torch.autograd.grad` with respect to
a private copy of the input only, so parameters' ``.grad`` stay untouched.

Examples
--------
>>> import torch, torchvision
>>> from fmwidget import attribution
>>> model = torchvision.models.resnet18(weights=None).eval()
>>> x = torch.rand(1, 3, 128, 128)
>>> attribution.guided_backprop(model, x, "layer2", 5).shape
torch.Size([3, 128, 128])
>>> attribution.guided_backprop_result(model, x, "layer2", 5, position=(3, 4)).position
(3, 4)
>>> cam, target = attribution.grad_cam(model, x, "layer4")
>>> cam.shape, 0.0 <= float(cam.min()) <= float(cam.max()) <= 1.0
(torch.Size([128, 128]), True)
>>> len(attribution.predictions(model(x), k=3))
3
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .gradients import (
    as_index,
    attribution_mode,
    capture_hook,
    check_activation,
    check_input,
    find_module,
    gradient_errors,
    prepared_input,
)
from .guided import GuidedBackpropResult, guided_backprop, guided_backprop_result

__all__ = [
    "GuidedBackpropResult",
    "class_scores",
    "grad_cam",
    "grad_cam_weights",
    "guided_backprop",
    "guided_backprop_result",
    "normalize_for_display",
    "predictions",
    "top_classes",
]


def grad_cam(
    model: nn.Module, x: torch.Tensor, name: str, target: int | None = None, *, device=None
) -> tuple[torch.Tensor, int]:
    """Grad-CAM heat map of one layer for one class (Selvaraju et al., 2017).

    The class score (the model's output for ``target``, before softmax) is
    differentiated with respect to the layer's activation; the gradient's
    spatial mean gives one weight per channel; the ReLU of the weighted sum
    of the channels is upsampled bilinearly (``align_corners=False``) to the
    input size and min-max scaled to ``[0, 1]``.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier whose output is a class-score vector (see
        :func:`class_scores`). Run in eval mode and left as it was.
    x : torch.Tensor
        Model input of shape ``(1, 3, H, W)``.
    name : str
        Module name; its output must be ``(1, C, h, w)``. A module called
        several times in one forward pass is taken at its first call.
    target : int, optional
        Class index; default the model's top-1 prediction.
    device : torch.device or str, optional
        Where to run; default the model's device.

    Returns
    -------
    cam : torch.Tensor
        ``(H, W)`` float32 on CPU in ``[0, 1]``; all zeros where the map is
        constant (e.g. no positive evidence), never NaN.
    target : int
        The class explained.

    Raises
    ------
    ValueError
        Unknown ``name``, a layer output that is not 4-D, a ``target`` out
        of range, or a model output that is not a class vector.

    Examples
    --------
    >>> import torchvision
    >>> model = torchvision.models.vgg11(weights=None)
    >>> cam, target = grad_cam(model, torch.rand(1, 3, 128, 128), "features.18")
    >>> cam.shape
    torch.Size([128, 128])
    """
    act, weights, target = grad_cam_weights(model, x, name, target, device=device)
    cam = torch.relu((weights[:, None, None] * act).sum(dim=0))[None, None]
    cam = F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[0, 0]
    low, high = cam.min(), cam.max()
    span = high - low
    if torch.isfinite(span) and span > 0:
        cam = (cam - low) / span
    else:
        cam = torch.zeros_like(cam)
    return cam, target


def grad_cam_weights(
    model: nn.Module, x: torch.Tensor, name: str, target: int | None = None, *, device=None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The parts of Grad-CAM: the layer's activation and one weight per channel.

    Returns
    -------
    act : torch.Tensor
        ``(C, h, w)`` float32 CPU: the layer's output (first call).
    weights : torch.Tensor
        ``(C,)`` float32 CPU: the spatial mean of the class score's gradient per channel.
    target : int
        The class (default: the top-1 prediction).

    Examples
    --------
    >>> import torchvision
    >>> act, w, t = grad_cam_weights(torchvision.models.resnet18(weights=None), torch.rand(1, 3, 64, 64), "layer4")
    >>> act.shape, w.shape
    (torch.Size([512, 2, 2]), torch.Size([512]))
    """
    check_input(x)
    if target is not None:
        target = as_index(target, "target")
    module = find_module(model, name)
    store: dict = {}
    with attribution_mode(model) as handles:
        xg = prepared_input(model, x, device)
        handles.append(module.register_forward_hook(capture_hook(store, stop=False)))
        with gradient_errors():
            output = model(xg)
        if "act" not in store:
            raise ValueError(f"layer {name!r} was not called during the forward pass; choose another layer.")
        act = store["act"]
        check_activation(act, name, spatial=True)
        scores = class_scores(output)
        if target is None:
            target = int(scores.argmax())
        elif not 0 <= target < scores.numel():
            raise ValueError(
                f"target {target} is out of range for a model with {scores.numel()} classes; "
                f"use 0 <= target < {scores.numel()} or target=None for the top prediction."
            )
        with gradient_errors():
            (grad,) = torch.autograd.grad(scores[target], act, allow_unused=True)
        if grad is None:
            raise ValueError(f"the model output does not depend on layer {name!r}; choose another layer.")
        act, grad = act.detach().float(), grad.float()
    return act[0].cpu(), grad[0].mean(dim=(1, 2)).cpu(), target


def class_scores(output) -> torch.Tensor:
    """The class-score vector of a classifier's output for one image.

    Parameters
    ----------
    output : torch.Tensor
        The model output: ``(1, K)``, ``(K,)`` or ``(1, K, 1, 1)``.

    Returns
    -------
    torch.Tensor
        ``(K,)``, a view of ``output`` (same device, dtype and autograd graph).

    Raises
    ------
    TypeError
        The output is not a tensor (a dict, a tuple, a model-output object).
    ValueError
        The output is not one class vector (a 4-D map, a batch of several).

    Examples
    --------
    >>> class_scores(torch.zeros(1, 1000)).shape
    torch.Size([1000])
    """
    if not isinstance(output, torch.Tensor):
        raise TypeError(
            f"output must be a tensor of class scores of shape (1, K), got {type(output).__name__}; "
            "wrap the model in an nn.Module whose forward returns the logits tensor "
            "(e.g. `return model(x)['out']` or `.logits`)."
        )
    shape = tuple(output.shape)
    scores = output.squeeze(0) if output.ndim > 1 and shape[0] == 1 else output
    while scores.ndim > 1 and scores.shape[-1] == 1:
        scores = scores.squeeze(-1)
    if scores.ndim != 1 or scores.numel() < 1:
        raise ValueError(
            f"output of shape {shape} is not a vector of class scores (expected (1, K)); "
            "predictions and Grad-CAM need a classifier: wrap a model with another output "
            "(a segmentation map, features) in an nn.Module that returns (1, K) logits."
        )
    return scores


def top_classes(output, k: int = 5) -> list[tuple[int, float]]:
    """The ``k`` most probable classes as ``(index, probability)``, best first.

    Probabilities are the softmax of :func:`class_scores` ``(output)``; ``k``
    larger than the number of classes returns them all.

    Examples
    --------
    >>> top_classes(torch.tensor([[0.0, 2.0, 1.0]]), k=2)[0][0]
    1
    """
    k = as_index(k, "k")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    scores = class_scores(output).detach().double()
    probs = torch.softmax(scores, dim=0)
    values, indices = probs.topk(min(k, probs.numel()))
    return [(int(i), float(p)) for i, p in zip(indices.tolist(), values.tolist())]


def predictions(output, k: int = 5, labels: Sequence[str] | None = None) -> list[tuple[str | int, float]]:
    """Top-``k`` predictions of a model output as ``(label, probability)``, best first.

    Parameters
    ----------
    output : torch.Tensor
        The model output for one image, e.g. ``Capture.output``: ``(1, K)``.
    k : int, default 5
        How many classes; at most ``K`` are returned.
    labels : sequence of str, optional
        Class names, ``len(labels) == K``; without it the label is the index.

    Returns
    -------
    list of (str or int, float)
        Softmax probabilities. Use :func:`top_classes` to get the indices
        as well.

    Examples
    --------
    >>> predictions(torch.tensor([[0.0, 3.0]]), k=1, labels=["dog", "cat"])[0][0]
    'cat'
    """
    if labels is not None:
        if isinstance(labels, str) or not isinstance(labels, Sequence):
            raise TypeError(f"labels must be a list of class names, got {type(labels).__name__}.")
        n_classes = class_scores(output).numel()
        if len(labels) != n_classes:
            raise ValueError(
                f"labels has {len(labels)} names but the model output has {n_classes} classes; "
                "pass one name per class, in class-index order."
            )
    top = top_classes(output, k)
    return [(labels[i] if labels is not None else i, p) for i, p in top]


def normalize_for_display(g, *, n_std: float = 5.0) -> np.ndarray:
    """Turn a guided-backprop gradient into an RGB picture.

    The usual display of guided backpropagation (as in the "deprocess"
    step of common Keras/PyTorch visualisation code): centre on the mean,
    so that no signal is mid-grey; scale so that ``n_std`` standard
    deviations on either side span the full range; clip; 8 bits. One
    mean and std over all three channels keep their relative colours.

    Parameters
    ----------
    g : torch.Tensor or numpy.ndarray
        ``(3, H, W)`` (or ``(1, H, W)``, shown grey), finite.
    n_std : float, default 5.0
        Standard deviations from the mean to black/white; smaller values
        give more contrast and saturate more.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8. A constant gradient gives mid-grey (128).

    Examples
    --------
    >>> normalize_for_display(torch.zeros(3, 4, 5)).shape
    (4, 5, 3)
    """
    arr = g.detach().cpu().double().numpy() if isinstance(g, torch.Tensor) else np.asarray(g, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[0] not in (1, 3):
        raise ValueError(f"g must have shape (3, H, W) or (1, H, W), got {arr.shape}.")
    if not np.isfinite(arr).all():
        raise ValueError("g contains NaN or infinite values; check the model and input for overflow.")
    if not n_std > 0:
        raise ValueError(f"n_std must be positive, got {n_std}.")
    centred = arr - arr.mean()
    std = centred.std()
    scaled = 0.5 + centred / (2.0 * n_std * std) if std > 0 else np.full_like(arr, 0.5)
    img = np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.repeat(img, 3, axis=0).transpose(1, 2, 0) if img.shape[0] == 1 else img.transpose(1, 2, 0)
