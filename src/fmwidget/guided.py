"""Guided backpropagation of a channel: what in *this* image makes it fire.

With ``a_c`` the channel's map at the layer, it is the gradient with respect to the input of
``<stop_grad(relu(a_c)), a_c>``: backpropagation starts from the channel's own rectified
response (``relu(a_c)`` on the channel, held constant, and 0 on every other channel), and every
``nn.ReLU`` module on the way back passes only positive gradients where its input was positive
(Springenberg et al., 2015). Positions where the channel fires strongly weigh most; a channel
that fires nowhere falls back to its strongest position. With ``position=(i, j)`` (or
``"max"``) it is the guided backpropagation of the single neuron ``a[c, i, j]``, as captum's
``NeuronGuidedBackprop``. The plain sum ``a_c.sum()`` is not used: for a first convolution its
gradient is the filter tiled at the stride, the same for every image.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
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
from .modelstate import StopForward

__all__ = ["GuidedBackpropResult", "guided_backprop", "guided_backprop_result"]


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
        as_index(position[0], "position[0] (the row i)"),
        as_index(position[1], "position[1] (the column j)"),
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


def _guided_relu_hook(module, inputs, output):
    # Recomputes the ReLU through _GuidedReLU; runs at every call of the
    # module, so a ReLU reused within one forward gets the rule each time.
    return _GuidedReLU.apply(inputs[0])


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
    check_input(x)
    channel = as_index(channel, "channel")
    position = _check_position(position)
    module = find_module(model, name)
    store: dict = {}
    with attribution_mode(model) as handles:
        xg = prepared_input(model, x, device)
        for m in model.modules():
            if isinstance(m, nn.ReLU):
                handles.append(m.register_forward_hook(_guided_relu_hook))
        # Registered after the ReLU hooks so a ReLU layer is captured in its guided form.
        handles.append(module.register_forward_hook(capture_hook(store, stop=True)))
        try:
            with gradient_errors():
                model(xg)
        except StopForward:
            pass
        if "act" not in store:
            raise ValueError(f"layer {name!r} was not called during the forward pass; choose another layer.")
        act = store["act"]
        check_activation(act, name, spatial=False)
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
        with gradient_errors():
            (grad,) = torch.autograd.grad(a, xg, grad_outputs=weight)
    return GuidedBackpropResult(grad[0].detach().float().cpu(), position, fallback)
