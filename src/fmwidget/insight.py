"""Which channels matter, and how two images differ: scores and differences from exact activations.

Scores (:func:`channel_scores`), all from the exact float32 activation of one image:

``mean``
    the channel's spatial mean;
``max``
    its spatial maximum;
``active``
    the fraction of its positions above zero;
``contribution``
    the Grad-CAM weight of the channel for a class (the spatial mean of the class score's
    gradient) times the channel's spatial mean: how much the channel adds to that class's
    Grad-CAM evidence.

A difference (:func:`difference`) is first minus second, exact, in float32.
"""

from __future__ import annotations

import torch

from . import attribution, capture
from .rules import RANKINGS

__all__ = ["RANKINGS", "channel_scores", "difference", "rank"]


def channel_scores(model, x: torch.Tensor, name: str, by: str, *, target: int | None = None, device=None) -> tuple[torch.Tensor, int | None]:
    """One score per channel of layer ``name`` for input ``x``, and the class used (contribution).

    Examples
    --------
    >>> import torchvision
    >>> m = torchvision.models.resnet18(weights=None).eval()
    >>> s, _ = channel_scores(m, torch.rand(1, 3, 64, 64), "conv1", "active")
    >>> s.shape, bool(((s >= 0) & (s <= 1)).all())
    (torch.Size([64]), True)
    """
    if by not in RANKINGS or by == "channel":
        raise ValueError(f"by={by!r} is not a score; choose one of {', '.join(repr(k) for k in RANKINGS if k != 'channel')}.")
    if by == "contribution":
        act, weights, used = attribution.grad_cam_weights(model, x, name, target, device=device)
        return (weights.double() * act.double().mean(dim=(1, 2))).float(), used
    act = capture.exact_activation(model, x, name, device=device).double()
    flat = act.reshape(act.shape[0], -1)
    if by == "mean":
        scores = flat.mean(dim=1)
    elif by == "max":
        scores = flat.amax(dim=1)
    else:
        scores = (flat > 0).double().mean(dim=1)
    return scores.float(), None


def rank(scores: torch.Tensor) -> list[tuple[int, float]]:
    """``(channel, score)`` pairs, best first; equal scores keep channel order; NaN last.

    >>> rank(torch.tensor([0.5, 2.0, 0.5]))
    [(1, 2.0), (0, 0.5), (2, 0.5)]
    """
    values = scores.tolist()
    order = sorted(range(len(values)), key=lambda c: (values[c] != values[c], -values[c] if values[c] == values[c] else 0, c))
    return [(c, values[c]) for c in order]


def difference(model, x1: torch.Tensor, x2: torch.Tensor, name: str, *, device=None) -> torch.Tensor:
    """Exact (C, H, W) float32 activation of ``x1`` minus that of ``x2`` at layer ``name``."""
    a = capture.exact_activation(model, x1, name, device=device)
    b = capture.exact_activation(model, x2, name, device=device)
    if a.shape != b.shape:
        raise ValueError(
            f"compare: the two images give layer {name!r} maps of different shapes ({tuple(a.shape)} "
            f"and {tuple(b.shape)}); compare images that the transform brings to one size."
        )
    return a - b

