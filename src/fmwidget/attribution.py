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

import contextlib
import difflib
import operator
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

try:
    # The model-state helpers moved from fmwidget.capture to fmwidget.modelstate (public names).
    from .modelstate import StopForward as _StopForward
    from .modelstate import check_device as _check_device
    from .modelstate import model_errors, model_state
    from .modelstate import model_input as _model_input
except ImportError:  # a tree from before that move
    from .capture import _check_device, _model_input, _StopForward, model_errors, model_state  # noqa: I001

__all__ = [
    "GuidedBackpropResult",
    "class_scores",
    "grad_cam",
    "guided_backprop",
    "guided_backprop_result",
    "normalize_for_display",
    "predictions",
    "top_classes",
]


class _GuidedReLU(torch.autograd.Function):
    """ReLU whose backward passes only positive gradients where the input was positive.

    This is the guided-backpropagation rule of Springenberg et al. (2015),
    "Striving for Simplicity: The All Convolutional Net", section 3.4.
    """

    @staticmethod
    def forward(ctx, inp):
        positive = inp > 0
        # A bool mask, not the input or output: a later in-place op of the
        # model on either tensor cannot invalidate what backward needs.
        ctx.save_for_backward(positive)
        return inp.clamp(min=0)

    @staticmethod
    def backward(ctx, grad_out):
        (positive,) = ctx.saved_tensors
        return grad_out.clamp(min=0) * positive


# ----------------------------------------------------------------------------- validation


def _check_input(x) -> None:
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


def _as_index(value, argname: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{argname} must be an int, got a bool ({value!r}).")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{argname} must be an int, got {type(value).__name__} ({value!r}).") from None


def _check_position(position):
    """Type and length of ``position`` (before the forward pass); ranges are checked after it."""
    usage = "pass None (the whole response), 'max' or a pair (i, j) of ints (row, column)"
    if position is None:
        return None
    if isinstance(position, str):
        if position != "max":
            raise ValueError(f"position must be None, 'max' or (i, j), got {position!r}; {usage}.")
        return position
    if not isinstance(position, (tuple, list)):
        raise TypeError(f"position must be None, 'max' or (i, j), got {type(position).__name__}; {usage}.")
    if len(position) != 2:
        raise ValueError(
            f"position must be a pair (i, j), got {len(position)} values {tuple(position)!r}; {usage}."
        )
    return (
        _as_index(position[0], "position[0] (the row i)"),
        _as_index(position[1], "position[1] (the column j)"),
    )


def _resolve_position(position, a: torch.Tensor, name: str) -> tuple[int, int]:
    """``(i, j)`` checked against the ``(H', W')`` map ``a``, or its argmax for ``"max"``."""
    height, width = a.shape
    if position == "max":
        # Flat argmax: torch returns the first maximal index, so ties go to the first row-major one.
        return divmod(int(a.flatten().argmax()), width)
    i, j = position
    if not (0 <= i < height and 0 <= j < width):
        raise ValueError(
            f"position {(i, j)} is out of range for layer {name!r}, whose maps are {height} x {width}; "
            f"use 0 <= i < {height} and 0 <= j < {width}, or position='max'."
        )
    return i, j


def _find_module(model: nn.Module, name) -> nn.Module:
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


def _check_activation(act, name: str, *, spatial: bool) -> None:
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


def _prepared_input(model: nn.Module, x: torch.Tensor, device) -> torch.Tensor:
    """A private leaf copy of ``x`` on the model's device and dtype (the capture's own checks).

    The caller's tensor keeps its requires_grad and .grad.
    """
    dev = _check_device(model, device)
    return _model_input(model, x.detach(), dev).clone().requires_grad_(True)


# ----------------------------------------------------------------------------- model state


@contextlib.contextmanager
def _attribution_mode(model: nn.Module) -> Iterator[list]:
    """Put ``model`` in the state attribution needs and restore it exactly on exit.

    Inside: eval mode, parameters without ``requires_grad`` (no weight
    gradients are computed or stored), ``nn.ReLU`` modules with
    ``inplace=False``, gradients enabled. Yields a list to which callers
    append hook handles; they are removed on exit, also on an exception.
    Modes, ``requires_grad`` flags and hooks are restored by
    :func:`fmwidget.capture.model_state`; the ``inplace`` flags here.
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


def _model_errors():
    """Report an error of the user's model (its forward or its backward) as a ModelError."""
    return model_errors(
        "it, while computing gradients for attribution,",
        "The model must run on a (1, 3, H, W) input with gradients enabled, without in-place "
        "changes to tensors autograd needs; choose another layer or fix forward().",
    )


def _capture_hook(store: dict, *, stop: bool):
    """Forward hook keeping the first call's output of a module in ``store["act"]``."""

    def hook(module, inputs, output):
        if "act" in store:
            return None
        store["act"] = output
        if stop:
            raise _StopForward
        if isinstance(output, torch.Tensor):
            # The rest of the model gets a copy, so a later in-place op
            # (ResNet's ``out += identity``) cannot alter the captured tensor.
            return output.clone()
        return None

    return hook


def _guided_relu_hook(module, inputs, output):
    # Recomputes the ReLU through _GuidedReLU; runs at every call of the
    # module, so a ReLU reused within one forward gets the rule each time.
    return _GuidedReLU.apply(inputs[0])


# ----------------------------------------------------------------------------- public API


class GuidedBackpropResult(NamedTuple):
    """What :func:`guided_backprop_result` returns.

    Attributes
    ----------
    gradient : torch.Tensor
        ``(3, H, W)`` float32 on CPU, the guided backpropagation itself (what
        :func:`guided_backprop` returns).
    position : tuple of (int, int) or None
        The neuron ``(i, j)`` of the channel that was back-propagated, or
        ``None`` when it was the channel's whole rectified response.
    fallback : bool
        True when the whole rectified response was asked for but the channel
        never fires on this image (it is zero everywhere), so its strongest
        position was used instead; ``position`` says which.
    """

    gradient: torch.Tensor
    position: tuple[int, int] | None
    fallback: bool


def guided_backprop(
    model: nn.Module, x: torch.Tensor, name: str, channel: int, *,
    position: tuple[int, int] | str | None = None, device=None,
) -> torch.Tensor:
    """Guided backpropagation of one channel of one layer: what in this image makes it fire.

    With ``a`` the output of layer ``name`` for the input ``x`` and ``a_c``
    its map for ``channel``, the result is the gradient with respect to
    ``x`` of

    * ``position=None`` (default): ``<stop_grad(relu(a_c)), a_c>``, the
      sum over positions of ``relu(a[c, i, j]) * a[c, i, j]`` with the first
      factor held constant. That is, backpropagation starts from the
      channel's own rectified response, ``relu(a_c)`` on channel ``c`` and 0
      on every other channel, so the positions where the channel fires
      strongly weigh most and those where it does not fire not at all (the
      whole feature map projected back to the input, as Zeiler and Fergus,
      2014, do, here with the guided rule). If the channel fires nowhere (``relu(a_c)`` is all zero), the
      strongest position ``argmax a_c`` is used instead (the fallback; see
      :func:`guided_backprop_result` to learn when that happened).
    * ``position=(i, j)``: the single neuron ``a[c, i, j]``;
      ``position="max"``: the neuron at the channel's spatial argmax (first
      in row-major order). This equals captum's
      ``NeuronGuidedBackprop(model, layer).attribute(x, (c, i, j))``.

    In both, every ``nn.ReLU`` module between the input and the layer
    back-propagates by the guided rule of Springenberg et al. (2015): only
    positive gradients, and only where its input was positive.

    Parameters
    ----------
    model : torch.nn.Module
        The network. It is run in eval mode and left exactly as it was.
    x : torch.Tensor
        Model input of shape ``(1, 3, H, W)`` (any device; a copy is moved
        to the model's device).
    name : str
        Module name from ``model.named_modules()``. Its output must be
        ``(1, C, H', W')`` or ``(1, C)``. A module called several times in
        one forward pass is taken at its first call.
    channel : int
        Channel of that output, ``0 <= channel < C``.
    position : None, "max" or (int, int), optional
        ``None`` for the channel's whole rectified response; a row and
        column ``(i, j)`` with ``0 <= i < H'`` and ``0 <= j < W'``, or
        ``"max"``, for one neuron. Only for layers with spatial maps.
    device : torch.device or str, optional
        Where to run; default the device of the model's first parameter or
        buffer (CPU if it has none). The model must already be there.

    Returns
    -------
    torch.Tensor
        ``(3, H, W)`` float32 on CPU, same size as ``x``. Display it with
        :func:`normalize_for_display`.

    Raises
    ------
    ValueError
        Unknown ``name``, a layer output of the wrong shape, a ``channel``
        or ``position`` out of range, a ``position`` that is not a pair or
        ``"max"``, or a layer not reached by the forward pass.
    TypeError
        ``x``, ``name``, ``channel`` or ``position`` of the wrong type.
    fmwidget.capture.ModelError
        The model's own forward or backward failed.

    Notes
    -----
    Why not the gradient of ``a_c.sum()``: for a first convolution (no ReLU
    between it and the input) that is the filter tiled at the stride, the
    same for every image. Weighting by ``relu(a_c)`` makes the first layer
    show the image's edges or colours that the filter responds to, and
    deeper layers the parts of the image that drive the channel where it is
    active. The default's values are weighted by the activation, so their
    scale depends on the layer; only the pattern is meant to be looked at.

    The guided rule is not linear in the upstream gradient, so the default
    is not the ``relu(a_c)``-weighted sum of the single-neuron maps: it is
    one backward pass started from the whole weighted map.

    Only ``nn.ReLU`` modules get the guided rule; ReLUs applied with
    ``torch.nn.functional.relu`` (or ``torch.relu``) inside a ``forward``
    keep their ordinary gradient. The rule is applied by forward hooks that
    recompute each ReLU through a custom autograd function. Full backward
    hooks were not used: they wrap module inputs and outputs in views that
    clash with the in-place arithmetic many models do. The forward stops as
    soon as ``name``'s output exists; the graph up to it is complete, so
    backward is unaffected. If ``name`` is itself a ReLU and its channel
    never fires, the fallback gives all zeros: the guided rule passes
    nothing through a ReLU that is off everywhere.

    Examples
    --------
    >>> import torchvision
    >>> model = torchvision.models.alexnet(weights=None)
    >>> x = torch.rand(1, 3, 128, 128)
    >>> g = guided_backprop(model, x, "features.3", 7)
    >>> g.shape, g.dtype
    (torch.Size([3, 128, 128]), torch.float32)
    >>> guided_backprop(model, x, "features.3", 7, position=(5, 9)).shape
    torch.Size([3, 128, 128])
    """
    return guided_backprop_result(model, x, name, channel, position=position, device=device).gradient


def guided_backprop_result(
    model: nn.Module, x: torch.Tensor, name: str, channel: int, *,
    position: tuple[int, int] | str | None = None, device=None,
) -> GuidedBackpropResult:
    """:func:`guided_backprop`, also saying which neuron was used and whether it fell back.

    Same arguments, definition and errors as :func:`guided_backprop`.

    Returns
    -------
    GuidedBackpropResult
        ``(gradient, position, fallback)``: the ``(3, H, W)`` float32 CPU
        gradient; ``None`` or the ``(i, j)`` back-propagated from; whether
        the channel never fired so that its strongest position was used.
        For a ``(1, C)`` layer the channel is one neuron: ``position`` is
        always ``None`` and the fallback is the plain guided gradient of
        that neuron.

    Examples
    --------
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3))
    >>> _ = torch.nn.init.constant_(net[2].bias, -1e3)  # layer "2" is negative everywhere
    >>> x = torch.rand(1, 3, 16, 16)
    >>> res = guided_backprop_result(net, x, "2", 1)
    >>> res.fallback, res.position == guided_backprop_result(net, x, "2", 1, position="max").position
    (True, True)
    >>> res.gradient.shape
    torch.Size([3, 16, 16])
    """
    _check_input(x)
    channel = _as_index(channel, "channel")
    position = _check_position(position)
    module = _find_module(model, name)
    store: dict = {}
    with _attribution_mode(model) as handles:
        xg = _prepared_input(model, x, device)
        for m in model.modules():
            if isinstance(m, nn.ReLU):
                handles.append(m.register_forward_hook(_guided_relu_hook))
        # Registered after the ReLU hooks so a ReLU layer is captured in its guided form.
        handles.append(module.register_forward_hook(_capture_hook(store, stop=True)))
        try:
            with _model_errors():
                model(xg)
        except _StopForward:
            pass
        if "act" not in store:
            raise ValueError(f"layer {name!r} was not called during the forward pass; choose another layer.")
        act = store["act"]
        _check_activation(act, name, spatial=False)
        n_channels = act.shape[1]
        if not 0 <= channel < n_channels:
            raise ValueError(
                f"channel {channel} is out of range for layer {name!r}, which has {n_channels} "
                f"channels; use 0 <= channel < {n_channels}."
            )
        if position is not None and act.ndim != 4:
            raise ValueError(
                f"position={position!r} needs a layer with spatial maps, but layer {name!r} outputs "
                f"{tuple(act.shape)}; use position=None or choose a convolutional layer."
            )
        if not act.requires_grad:
            raise ValueError(f"layer {name!r} output does not depend on the input; choose another layer.")
        a = act[0, channel]  # (H', W'), or 0-d for a (1, C) layer
        fallback = False
        if position is None:
            weight = torch.relu(a.detach())  # constant: only a_c itself is differentiated
            if not weight.any():
                # The channel is off everywhere: relu(a_c) would back-propagate nothing.
                fallback = True
                if a.ndim == 2:
                    position = "max"
                else:
                    weight = torch.ones_like(weight)
        if position is not None:
            position = _resolve_position(position, a.detach(), name)
            a, weight = a[position], torch.ones_like(a[position])
        with _model_errors():
            (grad,) = torch.autograd.grad(a, xg, grad_outputs=weight)
    return GuidedBackpropResult(grad[0].detach().float().cpu(), position, fallback)


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
    _check_input(x)
    if target is not None:
        target = _as_index(target, "target")
    module = _find_module(model, name)
    store: dict = {}
    with _attribution_mode(model) as handles:
        xg = _prepared_input(model, x, device)
        handles.append(module.register_forward_hook(_capture_hook(store, stop=False)))
        with _model_errors():
            output = model(xg)
        if "act" not in store:
            raise ValueError(f"layer {name!r} was not called during the forward pass; choose another layer.")
        act = store["act"]
        _check_activation(act, name, spatial=True)
        scores = class_scores(output)
        if target is None:
            target = int(scores.argmax())
        elif not 0 <= target < scores.numel():
            raise ValueError(
                f"target {target} is out of range for a model with {scores.numel()} classes; "
                f"use 0 <= target < {scores.numel()} or target=None for the top prediction."
            )
        with _model_errors():
            (grad,) = torch.autograd.grad(scores[target], act, allow_unused=True)
        if grad is None:
            raise ValueError(f"the model output does not depend on layer {name!r}; choose another layer.")
        act, grad = act.detach().float(), grad.float()
        weights = grad.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((weights * act).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[0, 0]
        low, high = cam.min(), cam.max()
        span = high - low
        if torch.isfinite(span) and span > 0:
            cam = (cam - low) / span
        else:
            cam = torch.zeros_like(cam)
    return cam.cpu(), target


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
    k = _as_index(k, "k")
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
