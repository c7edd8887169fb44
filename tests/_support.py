"""Helpers shared by the tests: a tiny seeded CNN and checks that a model was left untouched.

(Not in conftest.py: tests/e2e has a conftest.py too, and ``from conftest import`` would be
ambiguous between the two.)
"""

from __future__ import annotations

import torch
from torch import nn

class TinyCNN(nn.Module):
    """Conv -> inplace ReLU (reused) -> depthwise conv -> grouped conv -> pool -> linear."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)  # reused three times in forward()
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.grouped = nn.Conv2d(8, 16, 3, padding=1, groups=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv1(x))
        x = self.relu(self.dw(x))
        x = self.relu(self.grouped(x))
        return self.fc(self.pool(x).flatten(1))


def hooks_of(model: nn.Module) -> int:
    """How many hooks of any kind are attached anywhere in ``model``."""
    total = 0
    for m in model.modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            total += len(getattr(m, attr, {}))
    return total


def snapshot(model: nn.Module) -> dict:
    """Everything fmwidget promises to leave as it was."""
    return {
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grad": [p.grad is None for p in model.parameters()],
        "inplace": [getattr(m, "inplace", None) for m in model.modules()],
        "weights": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "hooks": hooks_of(model),
    }


def assert_untouched(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    for key in ("training", "requires_grad", "grad", "inplace", "hooks"):
        assert after[key] == before[key], key
    for k, v in before["weights"].items():
        assert torch.equal(after["weights"][k], v), k
