"""Fuzzing the browser side: random state updates and custom messages never break the widget.

Whatever a (buggy or hostile) front end sends, no exception escapes into the kernel, the
public state stays consistent with the current layer and view, the Python-only traits are
never set from the browser, and the user's model is left exactly as it was.
"""

from __future__ import annotations

import math

import pytest
import torch
from _support import TinyCNN, assert_untouched, hooks_of, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from fmwidget import FeatureMapExplorer, views
from fmwidget import _widget as W

PUBLIC = list(W._BROWSER_KEYS)
PRIVATE = ["_layers", "_header", "_input_png", "_grid", "_grid_id", "_grid_meta", "_side",
           "_attrib", "_status", "_error", "_model_name", "_model_module", "_view_name", "_esm", "_css",
           "_dom_classes", "layout", "tabbable", "tooltip", "comm", "keys", "log"]


class PagedCNN(nn.Module):
    """Small, but with more channels than one page (40, 70) and 70 input channels (2 in-pages)."""

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


# ---------------------------------------------------------------------------- strategies

LAYER_NAMES = ["conv1", "relu", "dw", "grouped", "pool", "act", "conv2", "conv3", "fc", ""]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=80),
    st.integers(),  # unbounded: huge and negative
    st.sampled_from([2**31, 2**63, -(2**63), 10**40]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1.0, 2.5, -1.0, math.nan, math.inf, -math.inf]),
    st.text(max_size=12),
    st.sampled_from(LAYER_NAMES + list(W.VIEWS) + list(W.NORMS) + list(W.CMAPS)),
    st.sampled_from(list(W.PAGE_SIZES)),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
keys = st.one_of(st.sampled_from(PUBLIC), st.sampled_from(PRIVATE), st.text(max_size=10))
small = st.integers(min_value=-2, max_value=75)
# Mostly valid values, so that the fuzzing walks through layers, views and pages too.
PLAUSIBLE = {
    "layer": st.sampled_from(LAYER_NAMES),
    "view": st.sampled_from(list(W.VIEWS)),
    "norm": st.sampled_from(list(W.NORMS)),
    "cmap": st.sampled_from(list(W.CMAPS)),
    "page_size": st.sampled_from(list(W.PAGE_SIZES)),
    "channel": small,
    "page": st.integers(min_value=-1, max_value=5),
    "in_page": st.integers(min_value=-1, max_value=2),
    "_grid": json_values,
}


@st.composite
def plausible_updates(draw):
    chosen = draw(st.lists(st.sampled_from(sorted(PLAUSIBLE)), min_size=1, max_size=4, unique=True))
    return {key: draw(PLAUSIBLE[key] if draw(st.integers(0, 5)) else json_values) for key in chosen}


state_updates = st.one_of(
    plausible_updates(),
    plausible_updates(),
    plausible_updates(),
    st.dictionaries(keys, json_values, max_size=5),
    json_values,  # not even an object
)
custom_messages = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(list(W._MESSAGES) + ["", "nope", "set_state"])},
        optional={"target": json_values, "layer": json_values, "channel": json_values},
    ),
    st.dictionaries(st.text(max_size=6), json_values, max_size=3),
    json_values,
)
messages = st.lists(
    st.one_of(st.tuples(st.just("state"), state_updates), st.tuples(st.just("custom"), custom_messages)),
    min_size=1,
    max_size=3,
)


# ---------------------------------------------------------------------------- invariants


def check_consistent(w: FeatureMapExplorer) -> None:
    names = w.layer_names
    assert w.layer in names
    info = w._cap.info(w.layer)
    assert isinstance(w.channel, int) and not isinstance(w.channel, bool)
    assert 0 <= w.channel < info.out_shape[0]
    assert w.view in W.VIEWS and w.norm in W.NORMS and w.cmap in W.CMAPS
    assert w.page_size in W.PAGE_SIZES
    rows = views.filter_rows(info) if w.view == "filters" else info.out_shape[0]
    assert 0 <= w.page < views.n_pages(max(rows, 1), w.page_size)
    assert 0 <= w.in_page < views.n_pages(views.filter_cols(info), views.IN_PAGE)
    if w.view == "filters":
        assert info.weight_shape, "the filters view is shown only for layers with weights"
    if w.view in ("maps", "filters"):
        meta = w._grid_meta
        assert meta["layer"] == w.layer and meta["kind"] == w.view
        assert meta["page"] == w.page and meta["in_page"] == w.in_page
        shown = [c for c in meta["channels"] if c >= 0]
        assert shown and shown[0] == w.page * w.page_size
        assert w._grid.startswith("data:image/png;base64,")
    else:
        assert w._side["layer"] == w.layer and w._side["channel"] == w.channel
    assert w._status == "ready"
    assert [d["name"] for d in w._layers] == names


def apply(w: FeatureMapExplorer, kind: str, msg) -> None:
    before = {k: getattr(w, k) for k in PRIVATE if k.startswith("_") and k in w.keys}
    if kind == "state":
        w.set_state(msg)
    else:
        w._on_custom_msg(w, msg, [])
    check_consistent(w)
    if kind == "state" and isinstance(msg, dict):
        for key, value in msg.items():
            if key in before and value != before[key]:
                assert getattr(w, key) != value, f"the browser set the private trait {key!r}"
        if any(k in before for k in msg):
            assert "may not set" in w._error


# ---------------------------------------------------------------------------- tests

FUZZ = settings(
    max_examples=1000, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def tiny_all():
    """The tiny model with every 4-D layer offered: ReLU and pooling layers have no filters."""
    torch.manual_seed(0)
    model = TinyCNN().train()  # training mode: the fuzzing must not change it
    torch.manual_seed(1)
    w = FeatureMapExplorer(model, torch.randn(1, 3, 24, 24), layers="all")
    before = snapshot(model)
    yield w, model, before
    w.close()
    assert hooks_of(model) == 0


@pytest.fixture(scope="module")
def paged():
    torch.manual_seed(0)
    model = PagedCNN().eval()
    w = FeatureMapExplorer(model, torch.randn(1, 3, 12, 12), page_size=16)
    before = snapshot(model)
    yield w, model, before
    w.close()


@FUZZ
@given(batch=messages)
def test_fuzz_browser_messages_tiny_model(tiny_all, batch):
    w, model, before = tiny_all
    assert w.layer_names == ["conv1", "relu", "dw", "grouped", "pool"]
    for kind, msg in batch:
        apply(w, kind, msg)
    assert_untouched(model, before)


@settings(FUZZ, max_examples=1000)
@given(batch=messages)
def test_fuzz_browser_messages_paging(paged, batch):
    w, model, before = paged
    for kind, msg in batch:
        apply(w, kind, msg)
    assert hooks_of(model) == 0 and not model.training
    assert_untouched(model, before)


def test_bools_equal_to_the_current_int_are_refused(tiny_model, tiny_input):
    """traitlets does not validate a value equal to the current one inside set_state's hold."""
    with FeatureMapExplorer(tiny_model, tiny_input) as w:
        for key in ("channel", "page", "in_page"):
            w.set_state({key: False})
            assert type(getattr(w, key)) is int and "must be an int" in w._error
        w.set_state({"channel": 1})
        w.set_state({"channel": True})
        assert type(w.channel) is int and w.channel == 1 and "bool" in w._error


def test_paging_messages_reach_every_view_and_page():
    """The states the fuzzing must keep consistent exist: pages, input pages, the side view."""
    torch.manual_seed(0)
    w = FeatureMapExplorer(PagedCNN().eval(), torch.randn(1, 3, 12, 12), page_size=16)
    w.set_state({"layer": "conv3", "view": "filters", "page": 2, "in_page": 1})
    assert (w.view, w.page, w.in_page) == ("filters", 2, 1) and w._error == ""
    check_consistent(w)
    w.set_state({"in_page": 2, "page": -1})
    assert (w.page, w.in_page) == (2, 1) and "in_page" in w._error and "page" in w._error
    check_consistent(w)
    w.set_state({"layer": "conv2", "view": "side", "channel": 69})
    assert w._side["channel"] == 69
    check_consistent(w)
    w.close()
