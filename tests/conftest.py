"""Shared fixtures: tiny seeded models for fast tests, the sample photo, and leak checks."""

from __future__ import annotations

import os

import pytest
import torch
from _support import TinyCNN

# Two cores: keep torch from oversubscribing them when tests run beside a Jupyter kernel.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def tiny_model() -> TinyCNN:
    torch.manual_seed(0)
    return TinyCNN().eval()


@pytest.fixture
def tiny_input() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(1, 3, 32, 32)


@pytest.fixture(scope="session")
def cat():
    """The bundled sample photo (scikit-image's Chelsea) as a PIL image."""
    from fmwidget import sample_image

    return sample_image()
