"""Helpers shared by the tests: small seeded CNNs, checks that a model was left untouched, and
the browser's side of the widget.

(Not in conftest.py: tests/e2e has a conftest.py too, and ``from conftest import`` would be
ambiguous between the two.)

The browser's side
------------------
What the browser receives is part of the documented contract (docs/design.md). The tests read
it the way ipywidgets exposes it publicly, ``w.get_state()``, decode payloads with
:func:`fmwidget.codec.unpack`, and talk to the widget the way the kernel delivers the
browser's messages: through the widget's comm (``w.comm.handle_msg``), so ipywidgets' own
plumbing (property locks, echo messages) runs as in a notebook. ipywidgets swallows an
exception raised there and only logs it; :func:`send_from_browser` and
:func:`message_from_browser` turn such a log record into a test failure. Every trait name the
tests need lives here, in one place.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

from fmwidget import codec

# The public selection traits (the browser's request: docs/design.md, plus the image shown, the
# image compared with it and the maps' order) and the data traits (Python's answer).
SELECTION = ("layer", "channel", "view", "norm", "cmap", "page", "page_size", "in_page", "image_index", "compare", "sort")
DATA = ("_maps", "_filters", "_map", "_input_png", "_attrib", "_images", "_compare", "_ranking")


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


class PagedCNN(nn.Module):
    """Small, with more channels than one page (70, 40) and 70 input channels (3 input pages).

    With a 12 x 12 input everything is under the 1 MiB cap; tests that need paged payloads
    without big tensors lower ``fmwidget.rules.GRID_CAP_BYTES``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 70, 3, padding=1)
        self.dw = nn.Conv2d(70, 70, 3, padding=1, groups=70)
        self.conv3 = nn.Conv2d(70, 40, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(40, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))
        x = self.act(self.dw(self.conv2(x)))
        return self.fc(self.pool(self.conv3(x)).flatten(1))


class WideCNN(nn.Module):
    """Over the real 1 MiB cap with a 64 x 64 input, and still fast on two cores.

    ``wide``: 300 maps of 64 x 64 (1.2 MB of tiles, paged); ``big``: a 400 x 300 x 3 x 3 weight
    (1.08 MB of codes, paged filters) with 400 maps of 16 x 16 (whole).
    """

    def __init__(self) -> None:
        super().__init__()
        self.wide = nn.Conv2d(3, 300, 1)
        self.big = nn.Conv2d(300, 400, 3, stride=4, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(400, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.big(torch.relu(self.wide(x)))).flatten(1))


@pytest.fixture(autouse=True)
def one_thread():
    """Run torch on one thread in the modules that import this fixture.

    These tests run small models, or big ones at small sizes, beside other work on two cores:
    there one thread is 3 to 20 times faster than two (OpenMP threads wait for each other when
    a core is taken), and at worst a little slower on an idle machine.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------ the model untouched


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


# ------------------------------------------------------------------------ the browser's side


def browser_state(w) -> dict:
    """Everything the browser holds of the widget (ipywidgets' ``get_state``)."""
    return w.get_state()


def selection(w) -> dict:
    """The public selection traits."""
    return {k: getattr(w, k) for k in SELECTION}


def shown(w) -> dict:
    """The selection and every data trait the browser holds: what a refused input must keep."""
    state = browser_state(w)
    return {**selection(w), **{k: state[k] for k in (*DATA, "_layers", "_header")}}


def payload(w, trait: str) -> dict:
    """A data trait's payload with its arrays decoded (``fmwidget.codec.unpack``)."""
    value = browser_state(w)[trait]
    assert value, f"{trait} is empty"
    return codec.unpack(value)


def layer_info(w, name: str | None = None) -> dict:
    """The browser's entry of ``_layers`` for ``name`` (default: the current layer)."""
    name = w.layer if name is None else name
    (entry,) = [d for d in browser_state(w)["_layers"] if d["name"] == name]
    return entry


def error(w) -> str:
    return browser_state(w)["_error"]


def names_field(message: str, key: str) -> bool:
    """Whether an error message names the selection field ``key``, as every refusal does:
    ``key=value ...``, ``key must be ...`` or traitlets' ``The 'key' trait ...``."""
    return re.search(rf"(?<![\w]){re.escape(key)}(=| must |' trait)", message) is not None


def status(w) -> str:
    return browser_state(w)["_status"]


class _Swallowed(logging.Handler):
    """Collects the records of exceptions ipywidgets caught and only logged."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or "Exception in" in record.getMessage():
            self.records.append(record)


@contextlib.contextmanager
def _no_swallowed_exceptions(w) -> Iterator[None]:
    handler = _Swallowed()
    loggers = {id(lg): lg for lg in (w.log, logging.getLogger("traitlets"), logging.getLogger())}
    for lg in loggers.values():
        lg.addHandler(handler)
    try:
        yield
    finally:
        for lg in loggers.values():
            lg.removeHandler(handler)
    if handler.records:
        record = handler.records[0]
        raise AssertionError(f"an exception escaped into ipywidgets: {record.getMessage()}") from (
            record.exc_info[1] if record.exc_info else None
        )


def _deliver(w, data: dict) -> None:
    with _no_swallowed_exceptions(w):
        w.comm.handle_msg({"content": {"data": data}, "buffers": [], "metadata": {}})


def send_from_browser(w, update: Any = None, **traits: Any) -> None:
    """The browser sets traits: an ``update`` message on the comm, as the kernel delivers it.

    ``update`` may be anything (a fuzzer sends non-objects too); ``traits`` are merged in. A
    closed widget has no comm: its public ``set_state`` is called instead.
    """
    if traits:
        update = {**(update or {}), **traits}
    if w.comm is None:
        w.set_state(update)
        return
    _deliver(w, {"method": "update", "state": update, "buffer_paths": []})


def message_from_browser(w, content: Any) -> None:
    """The browser's ``model.send(content)``: a custom message on the comm."""
    _deliver(w, {"method": "custom", "content": content})


@contextlib.contextmanager
def sent_to_browser(w, *, values: bool = True) -> Iterator[list[dict]]:
    """Record every message the widget sends on its comm: ``[{"method", "state"}, ...]``.

    ``values=False`` keeps only the trait names (``None`` for each value), for long runs.
    """
    sent: list[dict] = []
    comm = w.comm
    original = comm.send

    def send(data=None, metadata=None, buffers=None):
        if values:
            sent.append(data)
        else:
            sent.append({"method": data.get("method"), "state": dict.fromkeys(data.get("state", {}))})
        return original(data=data, metadata=metadata, buffers=buffers)

    comm.send = send
    try:
        yield sent
    finally:
        del comm.send  # back to the class's method


def keys_sent(sent: list[dict], method: str = "update") -> set[str]:
    """The trait names in the recorded messages of ``method`` (``"update"``: Python's own)."""
    return {k for m in sent if m.get("method") == method for k in m.get("state", {})}
