"""Fuzzing the browser side: random state updates and custom messages never break the widget.

Each Hypothesis example opens a fresh widget and sends it a sequence of what a (buggy or
hostile) front end may send, through the widget's comm as the kernel delivers it: updates that
mix valid and invalid values of every selection trait, unknown keys, keys only Python may set,
non-objects, and custom messages (``guided_backprop``, ``grad_cam`` with good and bad targets,
``clear_error``, ``add_image`` without a file, ``open_top`` without a scan, ``stop_scan``,
unknown types, non-objects). The widget holds two images, so the image shown and the one
compared with it change too. After every step:

* each field sent was applied (the trait equals the value, or its documented adjustment) or
  refused with an ``_error`` that names the field; Python-only traits are never set;
* the state is consistent: ``layer`` offered, ``0 <= channel < C``, the pages valid for the
  view, and the data trait the view needs holds the selection's layer, the shown image's
  capture and the block of the page (in the chosen order);
* no exception escapes into ipywidgets, and the user's model is left exactly as it was.

Each of the two fuzz tests sends over 1,000 updates and messages (and asserts it).
"""

from __future__ import annotations

import math

import pytest
import torch
from _support import (
    SELECTION,
    PagedCNN,
    TinyCNN,
    assert_untouched,
    browser_state,
    error,
    message_from_browser,
    names_field,
    one_thread,  # noqa: F401  (an autouse fixture)
    send_from_browser,
    snapshot,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from fmwidget import FeatureMapExplorer, rules

PYTHON_ONLY = ["_maps", "_filters", "_map", "_config", "_layers", "_header", "_input_png", "_attrib", "_status",
               "_error", "_images", "_versions", "_compare", "_ranking", "_scan", "_top", "_esm", "_css", "_model_name",
               "_view_name", "_dom_classes", "layout", "tabbable", "tooltip"]
NOT_TRAITS = ["comm", "keys", "log", "model", "input_tensor", "layer_names", "images", "", "Layer", "_grid"]
MESSAGES = ["guided_backprop", "grad_cam", "clear_error", "add_image", "stop_scan", "open_top"]
RANKINGS = [r["name"] for r in rules.config()["rankings"]]

# ---------------------------------------------------------------------------- strategies

OTHER_NAMES = ["fc", "", "conv", "features.0", "layer1", "Conv1"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=80),
    st.integers(),  # unbounded: huge and negative
    st.sampled_from([2**31, 2**63, -(2**63), 10**40]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1.0, 2.0, 2.5, -1.0, 64.0, math.nan, math.inf, -math.inf]),
    st.text(max_size=12),
    st.sampled_from(OTHER_NAMES + list(rules.VIEWS) + list(rules.NORMS) + list(rules.CMAPS) + RANKINGS),
    st.sampled_from(list(rules.PAGE_SIZES)),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
keys = st.one_of(st.sampled_from(SELECTION), st.sampled_from(PYTHON_ONLY), st.sampled_from(NOT_TRAITS),
                 st.text(max_size=10))


def updates(names: list[str]):
    """Browser updates for a model whose layers are ``names``: mostly plausible values (so that
    the fuzzing walks through layers, views and pages), some of anything, some non-objects."""
    plausible = {
        "layer": st.sampled_from(names[::-1]) | st.sampled_from(OTHER_NAMES),  # the first layer last
        "view": st.sampled_from(list(rules.VIEWS)),
        "norm": st.sampled_from(list(rules.NORMS)),
        "cmap": st.sampled_from(list(rules.CMAPS)),
        "page_size": st.sampled_from(list(rules.PAGE_SIZES)),
        "channel": st.integers(min_value=0, max_value=71) | st.integers(min_value=-2, max_value=80),
        "page": st.integers(min_value=0, max_value=4) | st.integers(min_value=-1, max_value=6),
        "in_page": st.integers(min_value=0, max_value=2) | st.integers(min_value=-1, max_value=3),
        "image_index": st.integers(min_value=0, max_value=1) | st.integers(min_value=-1, max_value=3),
        "compare": st.sampled_from([0, -1, 1]) | st.integers(min_value=-2, max_value=3),
        "sort": st.sampled_from(RANKINGS) | st.sampled_from(["", "Mean", "random"]),
    }

    @st.composite
    def plausible_updates(draw):
        chosen = draw(st.lists(st.sampled_from(SELECTION), min_size=1, max_size=4, unique=True))
        update = {key: draw(plausible[key] if draw(st.integers(0, 5)) else json_values) for key in chosen}
        if draw(st.integers(0, 9)) == 0:  # now and then a field the browser may not set, or none
            update[draw(st.sampled_from(PYTHON_ONLY + NOT_TRAITS))] = draw(json_values)
        return update

    return st.one_of(
        plausible_updates(),
        plausible_updates(),
        plausible_updates(),
        plausible_updates(),
        st.dictionaries(keys, json_values, max_size=5),
        json_values,  # not even an object
    )


targets = st.one_of(st.none(), st.integers(min_value=-2, max_value=12), json_values)
custom_messages = st.one_of(
    st.fixed_dictionaries({"type": st.just("guided_backprop")}, optional={"channel": json_values}),
    st.fixed_dictionaries({"type": st.just("grad_cam"), "target": targets}),
    st.fixed_dictionaries({"type": st.sampled_from(MESSAGES + ["", "nope", "set_state", "GRAD_CAM", "predictions"])},
                          optional={"target": json_values, "layer": json_values, "rank": json_values,
                                    "name": json_values}),
    st.dictionaries(st.text(max_size=6), json_values, max_size=3),
    json_values,
)


# ---------------------------------------------------------------------------- checks


def _same(value, sent) -> bool:
    """The trait holds the value sent (an integer-valued float arrives as that int: traitlets
    casts it, and JavaScript has no separate int type)."""
    if isinstance(sent, bool) or isinstance(value, bool):
        return type(value) is type(sent) and value == sent
    if isinstance(sent, float) and isinstance(value, int):
        return math.isfinite(sent) and sent == value
    return type(value) is type(sent) and value == sent


def _layer(w) -> dict:
    (entry,) = [d for d in browser_state(w)["_layers"] if d["name"] == w.layer]
    return entry


def check_consistent(w) -> None:
    state = browser_state(w)
    version = state["_header"]["version"]  # the shown image's capture
    layers = {d["name"]: d for d in state["_layers"]}
    assert list(layers) == w.layer_names
    assert w.layer in layers
    info = layers[w.layer]
    count = info["out_shape"][0]
    for key in ("channel", "page", "page_size", "in_page", "image_index", "compare"):
        assert type(getattr(w, key)) is int, key
    assert 0 <= w.channel < count
    assert w.view in rules.VIEWS and w.norm in rules.NORMS and w.cmap in rules.CMAPS and w.sort in RANKINGS
    assert w.page_size in rules.PAGE_SIZES
    images = state["_images"]
    assert 0 <= w.image_index < len(images) and -1 <= w.compare < len(images)
    assert len(state["_versions"]) == len(images) and state["_versions"][w.image_index] == version
    weight = info["weight_shape"]
    rows = weight[0] if w.view == "filters" else count
    assert 0 <= w.page < max(1, math.ceil(rows / w.page_size))
    inputs = weight[1] if weight else 0
    assert 0 <= w.in_page < max(1, math.ceil(inputs / rules.IN_PAGE))
    if w.view == "filters":
        assert weight, "the filters view is shown only for layers with weights"

    def block(p: dict, total: int, whole: bool, order: list | None) -> None:
        if whole:
            assert "items" not in p and (p["first"], p["shape"][0]) == (0, total)
            return
        start = w.page * w.page_size
        if order is not None:  # the page of the chosen order
            assert p["items"] == order[start : start + w.page_size] and p["shape"][0] == len(p["items"])
        else:
            assert "items" not in p
            assert (p["first"], p["shape"][0]) == (start, min(total - start, w.page_size))

    order = None
    if w.sort != "channel" and w.view == "maps":
        ranking = state["_ranking"]
        assert (ranking["layer"], ranking["version"], ranking["by"]) == (w.layer, version, w.sort)
        assert sorted(ranking["order"]) == list(range(count))
        order = ranking["order"]
    if w.view == "maps":
        p = state["_maps"]
        assert (p["kind"], p["layer"], p["version"], p["count"]) == ("maps", w.layer, version, count)
        block(p, count, info["maps_whole"], order)
    elif w.view == "filters":
        p = state["_filters"]
        assert (p["kind"], p["layer"], p["version"], p["count"]) == ("filters", w.layer, state["_header"]["weights_version"], weight[0])
        block(p, weight[0], info["filters_whole"], None)
    else:
        m = state["_map"]
        assert (m["kind"], m["layer"], m["version"], m["first"], m["shape"][0]) == ("map", w.layer, version, w.channel, 1)
        if weight:
            f = state["_filters"]
            assert (f["kind"], f["layer"], f["version"]) == ("filters", w.layer, state["_header"]["weights_version"])
        assert state["_input_png"].startswith("data:image/png;base64,")
    compared = state["_compare"]
    if w.compare < 0 or w.compare == w.image_index or w.view == "filters":
        assert compared == {}
    else:  # the other image's data and the difference, for the same block
        other = state["_versions"][w.compare]
        if w.view == "maps":
            assert (compared["maps"]["layer"], compared["maps"]["version"]) == (w.layer, other)
            assert compared["maps"]["shape"] == state["_maps"]["shape"]
            assert compared["maps"].get("items") == state["_maps"].get("items")
            assert (compared["diff"]["kind"], compared["diff"]["layer"]) == ("diff", w.layer)
        else:
            assert (compared["map"]["layer"], compared["map"]["first"], compared["map"]["version"]) == (w.layer, w.channel, other)
            assert (compared["map_diff"]["kind"], compared["map_diff"]["first"]) == ("map_diff", w.channel)
    assert state["_status"] == "ready"


def _channel_page(w) -> int:
    ranking = browser_state(w)["_ranking"]
    sorted_maps = w.view == "maps" and w.sort != "channel" and ranking
    return (ranking["order"].index(w.channel) if sorted_maps else w.channel) // w.page_size


def check_update(w, before: dict, update) -> None:
    """Every field of ``update`` was applied, adjusted as documented, or refused by name."""
    message = error(w)
    if not isinstance(update, dict):
        assert "not an object" in message and message.startswith("Refused")
        return
    for key, sent in update.items():
        if key in SELECTION:
            value = getattr(w, key)
            applied = _same(value, sent)
            # A layer without weights has no filters view: the view goes back to maps. (Its
            # explanation is lost when another field of the same update is refused: see
            # test_reliability.py::test_the_reason_for_a_view_falling_back_survives_another_refusal.)
            adjusted = key == "view" and sent == "filters" and value == "maps" and not _layer(w)["weight_shape"]
            # A new order (sort, or its layer or image) or going back to channel order shows
            # the selected channel's page in it.
            adjusted = adjusted or (key == "page" and value == _channel_page(w))
            refused = names_field(message, key)
            assert applied or adjusted or refused, (key, sent, value, message)
        elif key in before:  # a trait only Python sets
            assert f"the browser may not set {key!r}" in message, (key, message)
            assert browser_state(w)[key] != sent or before[key] == sent, f"the browser set {key!r}"
        else:
            assert f"unknown field {str(key)[:40]!r} ignored" in message, (key, message)


def check_message(w, content, before_attrib: dict, classes: int) -> None:
    """A custom message was answered (into ``_attrib``, for the current selection) or refused
    with an ``_error`` that says why; a refused one changes nothing."""
    message = error(w)
    state = browser_state(w)
    attrib, version = state["_attrib"], state["_header"]["version"]
    kind = content.get("type") if isinstance(content, dict) else None
    if kind not in MESSAGES:
        assert "unknown message" in message
        assert attrib == before_attrib
    elif kind == "clear_error":
        assert message == ""
    elif kind == "guided_backprop":  # on the current layer and channel (a "channel" sent is ignored)
        gbp = attrib["gbp"]
        assert gbp is not before_attrib.get("gbp")
        assert (gbp["kind"], gbp["layer"], gbp["channel"], gbp["version"]) == ("gbp", w.layer, w.channel, version)
    elif kind == "grad_cam":
        target = content.get("target")
        if target is None or (type(target) is int and 0 <= target < classes):
            cam = attrib["cam"]
            assert cam is not before_attrib.get("cam")
            assert (cam["kind"], cam["layer"], cam["version"]) == ("cam", w.layer, version)
            assert cam["target"] == (w.predictions(1)[0][0] if target is None else target)
        else:
            assert names_field(message, "target") and attrib == before_attrib, message
    elif kind == "add_image":  # no file's bytes came with it
        assert "0 files' bytes" in message and len(state["_images"]) == 2
    elif kind == "open_top":  # nothing was scanned: no top images to open
        assert names_field(message, "rank") and len(state["_images"]) == 2
    else:  # stop_scan: nothing runs
        assert attrib == before_attrib


# ---------------------------------------------------------------------------- the machines

FUZZ = settings(
    max_examples=100, stateful_step_count=20, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def browser_machine(model, x: list, **kwargs) -> type:
    """A state machine with one fresh widget per example (on the images ``x``); the browser's
    updates and messages (and now and then the user's own view change) are its steps, counted
    in ``steps``."""
    with FeatureMapExplorer(model, x, **kwargs) as w:
        names = w.layer_names
        classes = len(w.predictions(10**6))

    class BrowserMachine(RuleBasedStateMachine):
        steps = 0

        def __init__(self) -> None:
            super().__init__()
            self.before = snapshot(model)
            self.w = FeatureMapExplorer(model, x, **kwargs)

        @initialize(
            layer=st.sampled_from(names[::-1]),
            channel=st.integers(min_value=0, max_value=69),
            page_size=st.sampled_from(list(rules.PAGE_SIZES)),
            view=st.sampled_from(list(rules.VIEWS)),
            image_index=st.sampled_from([1, 0]),
            compare=st.sampled_from([0, -1, 1]),
            sort=st.sampled_from(RANKINGS[::-1]),
        )
        def browser_starts_somewhere(self, **update):
            """A first move, so that the examples start all over the model (Hypothesis favours
            the simplest values, and the widget opens on the first layer)."""
            self.browser_update(update)

        @rule(update=updates(names))
        def browser_update(self, update):
            state = browser_state(self.w)
            before = {k: state[k] for k in PYTHON_ONLY if k in state}
            send_from_browser(self.w, update)
            check_update(self.w, before, update)
            type(self).steps += 1

        @rule(content=custom_messages)
        def browser_message(self, content):
            before = browser_state(self.w)["_attrib"]
            message_from_browser(self.w, content)
            check_message(self.w, content, before, classes)
            type(self).steps += 1

        @precondition(lambda self: self.w.view == "maps")
        @rule(view=st.sampled_from(["filters", "side"]))
        def python_sets_the_view(self, view):
            self.w.view = view  # may fall back to "maps" (a layer without filters), never raises

        @invariant()
        def consistent(self):
            check_consistent(self.w)

        def teardown(self):
            self.w.close()
            assert_untouched(model, self.before)

    return BrowserMachine


def test_fuzz_browser_tiny_model_with_weightless_layers():
    """ReLU and pooling layers have no filters; the model is in training mode and must stay so."""
    torch.manual_seed(0)
    model = TinyCNN().train()
    torch.manual_seed(1)
    x = torch.randn(1, 3, 24, 24)
    machine = browser_machine(model, [x, x.flip(-1)], layers="all")
    run_state_machine_as_test(machine, settings=FUZZ)
    assert machine.steps >= 1000, machine.steps
    assert model.training


def test_fuzz_browser_paged_model(monkeypatch):
    """Maps and filters over a (lowered) cap travel page by page: the page block must follow."""
    monkeypatch.setattr(rules, "GRID_CAP_BYTES", 3000)
    torch.manual_seed(0)
    model = PagedCNN().eval()
    torch.manual_seed(1)
    x = torch.randn(1, 3, 12, 12)
    machine = browser_machine(model, [x, torch.randn(1, 3, 12, 12)], page_size=16)
    with FeatureMapExplorer(model, x) as w:  # the paths the fuzzing must walk exist
        whole = {d["name"]: (d["maps_whole"], d["filters_whole"]) for d in browser_state(w)["_layers"]}
    assert whole == {"conv1": (True, True), "conv2": (False, False), "dw": (False, True), "conv3": (False, True)}
    run_state_machine_as_test(machine, settings=FUZZ)
    assert machine.steps >= 1000, machine.steps


def test_bools_equal_to_the_current_int_are_refused(tiny_model, tiny_input):
    """traitlets does not validate a value equal to the current one inside set_state's hold."""
    with FeatureMapExplorer(tiny_model, tiny_input) as w:
        for key in ("channel", "page", "in_page"):
            send_from_browser(w, {key: False})
            assert type(getattr(w, key)) is int and f"{key} must be an int" in error(w)
        send_from_browser(w, channel=1)
        send_from_browser(w, channel=True)
        assert type(w.channel) is int and w.channel == 1 and "bool" in error(w)


def test_paging_messages_reach_every_view_and_page(monkeypatch):
    """The states the fuzzing must keep consistent exist: pages, input pages, the side view."""
    monkeypatch.setattr(rules, "GRID_CAP_BYTES", 3000)
    torch.manual_seed(0)
    with FeatureMapExplorer(PagedCNN().eval(), torch.randn(1, 3, 12, 12), page_size=16) as w:
        send_from_browser(w, layer="conv3", view="filters", page=2, in_page=1)
        assert (w.view, w.page, w.in_page) == ("filters", 2, 1) and error(w) == ""
        check_consistent(w)
        send_from_browser(w, in_page=3, page=-1)
        assert (w.page, w.in_page) == (2, 1) and names_field(error(w), "in_page") and names_field(error(w), "page")
        check_consistent(w)
        send_from_browser(w, layer="conv2", view="maps", channel=69)
        assert (w.page, browser_state(w)["_maps"]["first"]) == (4, 64)
        check_consistent(w)
        send_from_browser(w, view="side", channel=50)
        assert browser_state(w)["_map"]["first"] == 50
        check_consistent(w)
        # the dependent changes a layer change carries, in the same message (docs/design.md)
        send_from_browser(w, layer="conv1", channel=0, page=0, in_page=0)
        assert error(w) == "" and (w.layer, w.channel, w.page) == ("conv1", 0, 0)
        check_consistent(w)


@pytest.mark.parametrize("key", SELECTION)
def test_the_field_check_recognises_every_refusal(tiny_model, tiny_input, key):
    """The fuzzing's check that an error names its field is not vacuous: every selection
    field's refusal is recognised, and only that field's."""
    with FeatureMapExplorer(tiny_model, tiny_input) as w:
        send_from_browser(w, {key: "zzz" if key in ("layer", "view", "norm", "cmap", "sort") else 10**6})
        message = error(w)
        assert names_field(message, key), message
        assert [k for k in SELECTION if names_field(message, k)] == [key]
