"""Receptive fields: which box of the model input one position of a layer's map sees.

Works for any model (residual blocks, branches, padding, dilation, pooling) by asking the
model itself, through autograd, rather than by parsing its architecture.

Method
------
For a layer and an input size, :func:`receptive_field` runs the model (in eval mode, up to the
layer's first call only) on a small batch of random inputs with ``requires_grad`` and takes
the input gradient of the layer's output at a few positions, summed over the channels: each
position is selected in its own samples of the batch, so one backward pass gives all of them
(in eval mode the samples of a batch do not interact). The bounding box of the union of the
nonzero gradient over ``samples`` random inputs is the box that position sees, clipped to the
input.

From the boxes of the centre position, its diagonal neighbour and the first and last
positions it solves, per axis, the three numbers of a translation-equivariant field: the
*jump* (input pixels between neighbouring positions) and the start and end of position 0's
box, which may lie outside the input (padding). A box edge that touches the input border is
clipped and tells nothing, so only edges inside the input are used; when no measured box has
an edge inside the input on one side, every position's box reaches that border (which follows
from measuring the first and the last position), and that is what
:meth:`ReceptiveField.box` returns. The jump is the median of the slopes between the
unclipped edges of every two measured positions (so one edge that is off is outvoted);
without two such edges, the ratio of the input size to the map size.

Limits
------
* A pixel is in the box only if some random input gives it a nonzero gradient. Pixels the
  layer depends on only through paths that are zero for every sample (a ReLU unit that is off,
  a max-pool window element that never wins, a weight that is exactly zero) are missed, so the
  box can be a little smaller than the theoretical receptive field. Summing over every channel
  of the layer and taking ``samples`` random inputs makes this rare for real CNNs (each edge
  pixel has many paths); the tests check that the boxes equal the analytic receptive field
  for conv stacks and for ResNet's 7x7/2 conv + 3x3/2 max-pool stem.
* The box is what the position *depends on*, not where its weight concentrates: after a
  global operation (squeeze-and-excitation, as in every EfficientNet block from the first
  one on, attention, a global pooling fed back) each position depends on the whole input, and
  its box is the whole input.
* Assumes the field is the same box shifted by the jump for every position (true for
  convolutions and pools). Models whose padding depends on the input size ("same" padding
  computed at run time) or that resample feature maps may be off by a pixel or two; so may
  the last positions when the last rows of the input are used by no position (a stride that
  does not divide the size): the box then includes them, as the textbook formula does.
* A layer whose output has no gradient (the model detaches it, or it runs under
  ``torch.no_grad()`` inside ``forward``) gets the whole input as its box, with
  :attr:`ReceptiveField.measured` False and the reason in :attr:`ReceptiveField.note`.
* Costs a forward pass up to the layer on one random input (for the map size), then one
  forward and one backward pass on ``4 * samples`` random inputs (about 2 s for ResNet-50's last layer at 224 px on two CPU cores): cache the result
  (a :class:`~fmwidget.scan.ScanResult` does).

The model comes back exactly as it was (:func:`fmwidget.modelstate.model_state`): mode,
``requires_grad`` flags, no hooks; parameters get no ``.grad``; the global random number
generator is not used.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .capture import ModelError, check_device, model_state, resolve_layer
from .gradients import attribution_mode
from .modelstate import model_input

__all__ = ["ReceptiveField", "receptive_field"]

_SAMPLES = 3  # random inputs per measured position


@dataclass(frozen=True)
class ReceptiveField:
    """How each position of one layer's map maps to a box of the model input.

    Per axis (``y`` then ``x``), position ``p`` sees input pixels
    ``[start + p * jump, end + p * jump)``, clipped to ``[0, size)``. ``start`` is None when
    every position's box reaches the first row/column, ``end`` None when every box reaches the
    last.

    Attributes
    ----------
    layer : str
        The module name.
    input_size : (int, int)
        ``(height, width)`` of the model input.
    map_size : (int, int)
        ``(height, width)`` of the layer's output map.
    jump : (float, float)
        Input pixels between neighbouring positions (the product of the strides).
    start, end : (float or None, float or None)
        Box of position 0, possibly outside the input (padding); see above.
    measured : bool
        False when the gradient could not be measured: every box is then the whole input.
    note : str
        Why not, when ``measured`` is False.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1))
    >>> rf = receptive_field(net, "1", (16, 16))
    >>> rf.box(8, 8), rf.box(0, 0), rf.size
    ((6, 6, 11, 11), (0, 0, 3, 3), (5, 5))
    """

    layer: str
    input_size: tuple[int, int]
    map_size: tuple[int, int]
    jump: tuple[float, float]
    start: tuple[float | None, float | None]
    end: tuple[float | None, float | None]
    measured: bool = True
    note: str = ""

    @property
    def size(self) -> tuple[int | None, int | None]:
        """``(height, width)`` of the unclipped field, None on an axis where it is wider than
        could be measured (it reaches beyond the input on both sides).

        Examples
        --------
        >>> ReceptiveField("conv", (32, 32), (16, 16), (2.0, 2.0), (-3.0, -3.0), (4.0, 4.0)).size
        (7, 7)
        """
        return tuple(  # type: ignore[return-value]
            None if s is None or e is None else int(round(e - s))
            for s, e in zip(self.start, self.end)
        )

    def box(self, i: int, j: int) -> tuple[int, int, int, int]:
        """The ``(x0, y0, x1, y1)`` box of input pixels that position ``(i, j)`` (row, column)
        of the map sees, clipped to the input; ``x1`` and ``y1`` are exclusive.

        Examples
        --------
        >>> rf = ReceptiveField("conv", (32, 32), (16, 16), (2.0, 2.0), (-3.0, -3.0), (4.0, 4.0))
        >>> rf.box(5, 0)
        (0, 7, 4, 14)
        """
        for value, limit, axis in ((i, self.map_size[0], "i"), (j, self.map_size[1], "j")):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit:
                raise ValueError(
                    f"{axis}={value!r} is not a position of layer {self.layer!r}'s "
                    f"{self.map_size[0]} x {self.map_size[1]} map; pass 0 <= {axis} < {limit}."
                )
        y0, y1 = self._span(0, i)
        x0, x1 = self._span(1, j)
        return x0, y0, x1, y1

    def _span(self, axis: int, p: int) -> tuple[int, int]:
        length = self.input_size[axis]
        if not self.measured:
            return 0, length
        start, end, jump = self.start[axis], self.end[axis], self.jump[axis]
        lo = 0 if start is None else math.floor(start + p * jump + 1e-6)
        hi = length if end is None else math.ceil(end + p * jump - 1e-6)
        lo, hi = min(max(lo, 0), length - 1), min(max(hi, 0), length)
        return lo, max(hi, lo + 1)  # never empty: a position sees at least one pixel


class _Stop(Exception):
    """Raised from the hook once the layer's output is taken: the rest of the pass is skipped."""


def receptive_field(
    model: nn.Module,
    layer: str,
    input_size: Sequence[int],
    *,
    samples: int = _SAMPLES,
    device: torch.device | str | None = None,
    seed: int = 0,
) -> ReceptiveField:
    """Measure the receptive field of every position of ``layer``'s map (see the module notes).

    Parameters
    ----------
    model : torch.nn.Module
        Left exactly as it was.
    layer : str
        A module name from ``model.named_modules()``; its first call in the forward pass is used.
    input_size : (int, int)
        ``(height, width)`` of the model input.
    samples : int, optional
        Random inputs per measured position (their nonzero gradients are united).
    device : torch.device or str, optional
        The model's device (the default); fmwidget never moves the model, so another is refused.
    seed : int, optional
        Seed of the private generator of the random inputs (the result is deterministic).

    Returns
    -------
    ReceptiveField

    Raises
    ------
    TypeError, ValueError
        For a bad argument, a layer that does not run or does not output a 4-D map.
    fmwidget.capture.ModelError
        When the model raises on the random input.

    Examples
    --------
    >>> import torchvision
    >>> rf = receptive_field(torchvision.models.resnet18(weights=None), "maxpool", (64, 64))
    >>> rf.jump, rf.size, rf.box(8, 8)
    ((4.0, 4.0), (11, 11), (27, 27, 38, 38))
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    modules = {name: m for name, m in model.named_modules() if name}
    layer = resolve_layer(list(modules), layer, argname="layer")
    size = _input_size(input_size)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive int (random inputs per position); got {samples!r}.")
    dev = check_device(model, device)  # the model's device (the one rule, meta refused)
    gen = torch.Generator().manual_seed(int(seed))
    module = modules[layer]

    map_size, _ = _measure(model, module, layer, size, None, samples, dev, gen)
    h, w = map_size
    centre = (h // 2, w // 2)
    # The centre and its diagonal neighbour, and the first and last positions: edges inside the
    # input on both sides of the map, and pairs far apart for the jump.
    positions = list(dict.fromkeys(
        [centre, (min(centre[0] + 1, h - 1), min(centre[1] + 1, w - 1)), (0, 0), (h - 1, w - 1)]
    ))
    _, boxes = _measure(model, module, layer, size, positions, samples, dev, gen)
    if boxes.get(centre) is None:
        return _whole(layer, size, map_size, "the layer's output has no gradient at its centre")
    axes = []
    for axis in (0, 1):
        obs = [(p[axis], b[2 * axis], b[2 * axis + 1]) for p, b in boxes.items() if b is not None]
        axes.append(_solve_axis(obs, size[axis], map_size[axis]))
    return ReceptiveField(
        layer=layer,
        input_size=size,
        map_size=map_size,
        jump=(axes[0][0], axes[1][0]),
        start=(axes[0][1], axes[1][1]),
        end=(axes[0][2], axes[1][2]),
    )


def _whole(layer: str, size: tuple[int, int], map_size: tuple[int, int], why: str) -> ReceptiveField:
    jump = tuple(float(s) / max(m, 1) for s, m in zip(size, map_size))
    return ReceptiveField(layer, size, map_size, jump, (None, None), (None, None), False,  # type: ignore[arg-type]
                          f"{why}; every box is the whole input.")


def _input_size(value: Any) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in value)
        ok = all(not isinstance(v, bool) and int(v) == v for v in value)
    except (TypeError, ValueError):
        ok = False
    if not ok or h < 1 or w < 1:
        raise ValueError(f"input_size must be (height, width) in pixels, e.g. (224, 224); got {value!r}.")
    return h, w


def _measure(
    model: nn.Module,
    module: nn.Module,
    layer: str,
    size: tuple[int, int],
    positions: list[tuple[int, int]] | None,
    samples: int,
    dev: torch.device,
    gen: torch.Generator,
) -> tuple[tuple[int, int], dict[tuple[int, int], tuple[int, int, int, int] | None]]:
    """Run up to ``layer`` and return its map size and, per position, the (y0, y1, x0, x1)
    bounding box of the nonzero input gradient (None if there is none).

    With ``positions=None`` only the map size is found (a forward pass on one input, without
    gradients)."""
    count = 1 if positions is None else len(positions) * samples
    kept: list[Any] = []

    def hook(_module: nn.Module, _inputs: Any, out: Any) -> None:
        if not kept:
            kept.append(out)
            raise _Stop

    # Gradients (also inside the caller's inference_mode or no_grad), of the input only, with
    # the model restored on exit; the map size alone needs none.
    state = model_state(model, eval_mode=True) if positions is None else attribution_mode(model)
    with state as handles:
        handles.append(module.register_forward_hook(hook))
        with torch.no_grad() if positions is None else contextlib.nullcontext():
            x = model_input(model, torch.randn(count, 3, *size, generator=gen), dev)
            x.requires_grad_(positions is not None)
            try:
                model(x)
            except _Stop:
                pass
            except Exception as err:  # the user's model raised: say where, keep the cause
                if not kept:
                    raise ModelError(
                        f"model: its forward pass on a random {size[0]} x {size[1]} input (to "
                        f"measure layer {layer!r}'s receptive field) raised {type(err).__name__}: "
                        f"{err}."
                    ) from err
            if not kept:
                raise ValueError(
                    f"layer {layer!r} did not run during the forward pass, so it has no receptive "
                    f"field; pick a module that the model's forward() calls."
                )
            out = kept[0]
            if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[0] != count:
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(
                    f"layer {layer!r} outputs {shape}, not an (N, C, H, W) map, so its positions "
                    f"have no receptive field; pick a module with a spatial output."
                )
            map_size = (int(out.shape[2]), int(out.shape[3]))
            if positions is None:
                return map_size, {}
            if not out.requires_grad:
                return map_size, {p: None for p in positions}
            rows = torch.tensor([p[0] for p in positions], device=out.device).repeat_interleave(samples)
            cols = torch.tensor([p[1] for p in positions], device=out.device).repeat_interleave(samples)
            picked = out[torch.arange(count, device=out.device), :, rows, cols]  # (count, C)
            try:
                (grad,) = torch.autograd.grad(picked.float().sum(), x)
            except RuntimeError:  # e.g. the output was detached inside forward()
                return map_size, {p: None for p in positions}
    nonzero = (grad != 0).any(dim=1).reshape(len(positions), samples, *size).any(dim=1).cpu()
    boxes: dict[tuple[int, int], tuple[int, int, int, int] | None] = {}
    for p, mask in zip(positions, nonzero):
        ys = torch.nonzero(mask.any(dim=1)).flatten()
        xs = torch.nonzero(mask.any(dim=0)).flatten()
        if len(ys) == 0:
            boxes[p] = None
        else:
            boxes[p] = (int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1)
    return map_size, boxes


def _solve_axis(
    obs: list[tuple[int, int, int]], length: int, n: int
) -> tuple[float, float | None, float | None]:
    """(jump, start, end) of one axis from observed clipped spans ``(p, lo, hi)``."""
    left = sorted({(p, lo) for p, lo, _ in obs if lo > 0})  # edges inside the input are true
    right = sorted({(p, hi) for p, _, hi in obs if hi < length})
    # The median of the slopes between every two positions' edges: one edge that is off (a
    # last row of pixels that no position uses, a pixel with zero gradient) is outvoted.
    estimates = sorted(
        (e2 - e1) / (p2 - p1)
        for edges in (left, right)
        for (p1, e1), (p2, e2) in itertools.combinations(edges, 2)
        if p2 > p1
    )
    jump = statistics.median(estimates) if estimates else length / max(n, 1)
    if jump <= 0:
        jump = length / max(n, 1)
    if abs(jump - round(jump)) < 0.05 and round(jump) >= 1:
        jump = float(round(jump))  # strides are integers; absorb an edge off by one pixel
    # The union over the observations: an edge missed by zero gradients at one position is
    # usually found at another.
    start = min((lo - p * jump for p, lo in left), default=None)
    end = max((hi - p * jump for p, hi in right), default=None)
    return float(jump), start, end
