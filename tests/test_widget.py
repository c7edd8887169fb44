"""The widget's Python side: the public API, and the answer to the browser's selection.

What the browser receives is read as ipywidgets exposes it (``get_state()``) and decoded with
``fmwidget.codec``; every expected value is recomputed independently, from a capture of the
same input made here with :func:`fmwidget.capture.capture` and the public functions of
``fmwidget.codes``, ``fmwidget.grids``, ``fmwidget.render`` and ``fmwidget.rules``.
"""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
import torch
from _support import (
    PagedCNN,
    TinyCNN,
    WideCNN,
    browser_state,
    error,
    hooks_of,
    keys_sent,
    layer_info,
    message_from_browser,
    names_field,
    one_thread,  # noqa: F401  (an autouse fixture)
    payload,
    send_from_browser,
    sent_to_browser,
    shown,
)
from PIL import Image
from torch import nn
from traitlets import TraitError

from fmwidget import (
    FeatureMapExplorer,
    codec,
    codes,
    export,
    grids,
    preprocess,
    render,
    rules,
)
from fmwidget.capture import capture, exact_activation

LABELS = [f"label {i}" for i in range(10)]


def _png(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def _reference(w, model, layers=None):
    """An independent capture of the widget's input."""
    return capture(model, w.input_tensor, layers)


def _expected_tiles(cap, name: str) -> np.ndarray:
    """Every channel's map shrunk by the layer's factor (docs/design.md, "Codes")."""
    info = cap.info(name)
    factor = grids.layout(info)["scale"]
    assert factor == codes.shrink_factor(*info.out_shape[1:])
    return codes.shrink(cap.maps(name), factor, finite=bool(cap.stats(name)["finite"])).numpy()


def _within_half_step(p: dict, truth: torch.Tensor, items: slice) -> None:
    """Decoded payload codes are within half a step of ``truth`` (one row per item)."""
    q = p["codes"].astype(np.float64)
    lo = p["vmin"].astype(np.float64)[items]
    hi = p["vmax"].astype(np.float64)[items]
    shape = (-1,) + (1,) * (q.ndim - 1)
    v = lo.reshape(shape) + q * ((hi - lo) / 254).reshape(shape)
    ref = truth.double().numpy()
    tol = ((hi - lo) / 508).reshape(shape) * (1 + 1e-6) + 1e-6 * np.abs(ref)
    assert (np.abs(v - ref) <= tol).all()


@pytest.fixture
def w(tiny_model, tiny_input):
    widget = FeatureMapExplorer(tiny_model, tiny_input)
    yield widget
    widget.close()


@pytest.fixture(scope="module")
def wide():
    """Over the real 1 MiB cap: 'wide' has paged maps, 'big' paged filters."""
    torch.manual_seed(0)
    model = WideCNN().eval()
    torch.manual_seed(1)
    widget = FeatureMapExplorer(model, torch.randn(1, 3, 64, 64))
    yield widget, model
    widget.close()


# ------------------------------------------------------------------------------ the first answer


class Log(nn.Module):
    def forward(self, x):
        return torch.log(x)  # NaN where x < 0: NaN codes among finite ones


class LogNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.log = Log()

    def forward(self, x):
        return self.log(self.conv(x)).nan_to_num().mean((2, 3))


@pytest.mark.parametrize("net, size", [("tiny", (32, 32)), ("tiny", (150, 150)), ("tiny", (40, 200)), ("log", (130, 97))])
def test_the_constructor_sends_the_first_layers_whole_grid(net, size):
    torch.manual_seed(2)
    model = TinyCNN().eval() if net == "tiny" else LogNet().eval()
    layers = None if net == "tiny" else ["log"]
    first = "conv1" if net == "tiny" else "log"
    with FeatureMapExplorer(model, torch.randn(1, 3, *size), layers=layers) as w:
        cap = _reference(w, model, layers)
        info = cap.info(first)
        lay = grids.layout(info)
        state = browser_state(w)
        p = payload(w, "_maps")
        assert (w.layer, w.channel, w.view, w.page) == (first, 0, "maps", 0)
        assert (p["format"], p["kind"], p["layer"], p["first"], p["count"]) == (1, "maps", first, 0, 8)
        assert p["shape"] == [8, *lay["tile"]] and p["scale"] == lay["scale"]
        assert lay["tile"] == list(codes.shrunk_size(*size, codes.shrink_factor(*size)))
        assert isinstance(p["version"], int)
        assert np.array_equal(p["codes"], _expected_tiles(cap, first))
        assert p["vmin"].tobytes() == cap.stats(first)["min"].tobytes()
        assert p["vmax"].tobytes() == cap.stats(first)["max"].tobytes()
        if net == "log":  # NaN codes are left out of the tile means; a block of NaN stays NaN
            assert (p["codes"] == 255).any() and (p["codes"] < 255).any() and not cap.stats(first)["finite"]
        # Only what the maps view needs: nothing else, nothing ahead.
        assert state["_filters"] == {} and state["_map"] == {} and state["_input_png"] == ""
        assert state["_attrib"] == {} and state["_status"] == "ready" and state["_error"] == ""


def test_layers_config_and_header(tiny_model, tiny_input):
    with FeatureMapExplorer(tiny_model, tiny_input, labels=LABELS) as w:
        cap = _reference(w, tiny_model)
        state = browser_state(w)
        assert w.layer_names == cap.names == ["conv1", "dw", "grouped"]
        assert state["_layers"] == [{**i.to_json(), **grids.layout(i)} for i in cap.layers]
        config = dict(state["_config"])
        assert isinstance(config.pop("uid", ""), str)  # (an id of this widget's store, if any)
        assert config == rules.config()
        for entry in state["_config"]["cmaps"]:
            if entry["name"] != "auto":
                lut = codec.unpack_array(entry["lut"], "u1", (256, 3))
                assert np.array_equal(lut, rules.lut(entry["name"]))
                assert entry["gap"] == rules.CMAPS[entry["name"]][2]
        header = state["_header"]
        assert (header["model"], header["input_size"], header["device"]) == ("TinyCNN", [32, 32], "cpu")
        top = w.predictions(5)
        assert [(d["label"], d["prob"]) for d in header["predictions"]] == top
        assert [LABELS[d["index"]] for d in header["predictions"]] == [label for label, _ in top]
        assert header["predictions_note"] == ""
        probs = torch.softmax(tiny_model(tiny_input)[0].double(), 0)
        assert [d["index"] for d in header["predictions"]] == probs.topk(5).indices.tolist()


def test_without_labels_the_header_says_how_to_name_the_classes(w):
    header = browser_state(w)["_header"]
    assert [(d["index"], d["prob"]) for d in header["predictions"]] == w.predictions(5)
    assert all(d["label"] == f"class {d['index']}" for d in header["predictions"])
    assert "labels=" in header["predictions_note"]


def test_public_api_shapes_and_exactness(w, tiny_model, tiny_input):
    assert torch.equal(w.input_tensor, tiny_input)
    w.input_tensor.zero_()  # a copy
    assert torch.equal(w.input_tensor, tiny_input)
    assert w.model is tiny_model
    act = w.activation("conv1")
    with torch.no_grad():
        ref = tiny_model.conv1(tiny_input)[0]
    assert act.dtype == torch.float32 and torch.allclose(act, ref, rtol=1e-6, atol=0)
    assert act.min() < 0  # the inplace ReLU after conv1 did not rectify it
    assert w.filters("grouped").shape == (16, 4, 3, 3)
    assert w.filters("dw").shape == (8, 1, 3, 3)
    filt = w.filters("conv1")
    filt.zero_()  # a copy: the model's weight is untouched
    assert tiny_model.conv1.weight.abs().sum() > 0
    np.testing.assert_array_equal(w.to_numpy("dw"), w.activation("dw").numpy())
    np.testing.assert_array_equal(w.to_numpy(), w.activation("conv1").numpy())


# ------------------------------------------------------------------------------ the answers


def test_moving_the_layer_sends_that_layers_grid(w, tiny_model):
    cap = _reference(w, tiny_model)
    for name in ("grouped", "dw", "conv1"):
        with sent_to_browser(w) as sent:
            w.layer = name
        p = payload(w, "_maps")
        assert (p["layer"], p["first"], p["shape"][0], p["count"]) == (name, 0, cap.info(name).out_shape[0], p["shape"][0])
        assert np.array_equal(p["codes"], _expected_tiles(cap, name))
        assert keys_sent(sent) == {"_maps", "layer"}  # nothing else, nothing ahead
    send_from_browser(w, layer="dw")  # the same from the browser
    assert payload(w, "_maps")["layer"] == "dw" and error(w) == ""
    assert np.array_equal(payload(w, "_maps")["codes"], _expected_tiles(cap, "dw"))


def test_the_same_selection_twice_builds_nothing(w):
    w.layer = "dw"
    before = browser_state(w)["_maps"]
    with sent_to_browser(w) as sent:
        w.layer = "dw"
        send_from_browser(w, layer="dw")
        w.channel = 5  # the whole layer is there already: the browser draws it
        w.page = 0
        w.view = "filters"
        w.view = "maps"  # back: _maps still holds this block
    assert browser_state(w)["_maps"] is before
    assert "_maps" not in keys_sent(sent)
    assert keys_sent(sent) <= {"channel", "view", "_filters"}


@pytest.mark.parametrize("how", ["python", "browser"])
def test_colormap_and_normalisation_need_no_answer(w, how):
    w.view = "side"
    data = {k: browser_state(w)[k] for k in ("_maps", "_filters", "_map", "_input_png", "_attrib")}
    for norm, cmap in [("layer", "gray"), ("symmetric", "magma"), ("channel_symmetric", "bwr"), ("auto", "auto")]:
        with sent_to_browser(w) as sent:
            if how == "python":
                w.norm, w.cmap = norm, cmap
            else:
                send_from_browser(w, norm=norm, cmap=cmap)
        assert (w.norm, w.cmap) == (norm, cmap)
        assert keys_sent(sent) <= {"norm", "cmap"}  # an echo of the selection at most
        state = browser_state(w)
        assert all(state[k] is v for k, v in data.items())


def test_filters_view_sends_the_weight_codes(w, tiny_model):
    for name in ("conv1", "dw", "grouped"):
        w.layer, w.view = name, "filters"
        p = payload(w, "_filters")
        weight = getattr(tiny_model, name).weight.detach()
        assert (p["kind"], p["layer"], p["first"], p["count"]) == ("filters", name, 0, weight.shape[0])
        assert p["shape"] == list(weight.shape) and p["depthwise"] == (name == "dw") and p["bgr"] is False
        assert torch.equal(w.filters(name), weight)
        _within_half_step(p, w.filters(name), slice(0, weight.shape[0]))
        # each output filter between its own exact min and max
        flat = weight.reshape(weight.shape[0], -1)
        assert p["vmin"].tobytes() == flat.amin(1).numpy().tobytes()
        assert p["vmax"].tobytes() == flat.amax(1).numpy().tobytes()
        w.view = "maps"


def test_side_view_sends_the_channel_its_filter_and_the_input(w, tiny_model):
    cap = _reference(w, tiny_model)
    w.layer, w.channel = "grouped", 11
    with sent_to_browser(w) as sent:
        w.view = "side"
    assert keys_sent(sent) == {"view", "_map", "_filters", "_input_png"}
    m = payload(w, "_map")
    assert (m["kind"], m["layer"], m["first"], m["shape"], m["count"]) == ("map", "grouped", 11, [1, 32, 32], 16)
    assert np.array_equal(m["codes"][0], cap.maps("grouped")[11].numpy())  # full resolution
    assert m["vmin"].tobytes() == cap.stats("grouped")["min"].tobytes()
    assert payload(w, "_filters")["layer"] == "grouped"
    picture = np.asarray(_png(browser_state(w)["_input_png"]).convert("RGB"))
    assert np.array_equal(picture, preprocess.display_image(w.input_tensor))
    filters = browser_state(w)["_filters"]
    with sent_to_browser(w) as sent:
        w.channel = 3
    assert payload(w, "_map")["first"] == 3 and np.array_equal(payload(w, "_map")["codes"][0], cap.maps("grouped")[3].numpy())
    assert browser_state(w)["_filters"] is filters  # the whole weight is there already
    assert keys_sent(sent) == {"channel", "_map"}


def test_in_page_pages_the_inputs_and_needs_no_answer():
    torch.manual_seed(0)
    with FeatureMapExplorer(PagedCNN().eval(), torch.randn(1, 3, 12, 12), layer="conv3", view="filters") as w:
        filters = browser_state(w)["_filters"]
        assert payload(w, "_filters")["shape"] == [40, 70, 1, 1]  # every input channel travels
        for page in (1, 2, 0):
            w.in_page = page
        with pytest.raises(TraitError, match="in_page=3 is out of range.*0 to 2"):
            w.in_page = 3
        w.in_page = 2
        assert browser_state(w)["_filters"] is filters
        w.layer = "dw"  # depthwise: one input page
        assert w.in_page == 0


def test_layer_change_keeps_channel_and_pages_valid(tiny_model, tiny_input):
    with FeatureMapExplorer(tiny_model, tiny_input, page_size=16) as w:
        w.layer, w.channel = "grouped", 12
        w.layer = "dw"  # 8 channels: channel 12 no longer exists and falls back to 0
        assert (w.channel, w.page) == (0, 0)
        w.channel = 7
        w.layer = "grouped"
        assert (w.channel, w.page) == (7, 0)


def test_the_constructor_answers_the_selection_it_was_given(tiny_model, tiny_input):
    with FeatureMapExplorer(tiny_model, tiny_input, layer="grouped", channel=5, view="filters", norm="layer",
                            cmap="gray", page_size=16) as w:
        assert (w.layer, w.channel, w.view, w.norm, w.cmap, w.page_size) == ("grouped", 5, "filters", "layer", "gray", 16)
        state = browser_state(w)
        assert payload(w, "_filters")["layer"] == "grouped" and state["_maps"] == {} and state["_map"] == {}
    with FeatureMapExplorer(tiny_model, tiny_input, layer="dw", channel=6, view="side") as w:
        assert payload(w, "_map")["first"] == 6 and browser_state(w)["_input_png"]


def test_constructor_rejects_unknown_keywords_and_bad_values(tiny_model, tiny_input):
    with pytest.raises(TypeError, match="unexpected keyword.*colour"):
        FeatureMapExplorer(tiny_model, tiny_input, colour="red")
    with pytest.raises(TypeError, match="unexpected keyword.*page"):
        FeatureMapExplorer(tiny_model, tiny_input, page=1)
    with pytest.raises(TypeError, match="torch.nn.Module or a torchvision model name"):
        FeatureMapExplorer(3, tiny_input)
    with pytest.raises(TraitError, match="page_size=20 is not allowed"):
        FeatureMapExplorer(tiny_model, tiny_input, page_size=20)
    with pytest.raises(TraitError, match="channel=8 is out of range"):
        FeatureMapExplorer(tiny_model, tiny_input, channel=8)
    with pytest.raises(TypeError, match="labels must be a list"):
        FeatureMapExplorer(tiny_model, tiny_input, labels="cat")
    assert hooks_of(tiny_model) == 0


def test_a_first_view_that_cannot_be_shown_is_refused(tiny_model, tiny_input):
    with pytest.raises(ValueError, match="'relu' \\(ReLU\\) has no filters"):
        FeatureMapExplorer(tiny_model, tiny_input, layers="all", layer="relu", view="filters")
    assert hooks_of(tiny_model) == 0


def test_invalid_python_assignments_raise_clear_trait_errors(w):
    before = shown(w)
    with pytest.raises(TraitError, match="Did you mean 'conv1'"):
        w.layer = "conv"
    with pytest.raises(TraitError, match="out of range.*0 to 7"):
        w.channel = 8
    with pytest.raises(TraitError, match="out of range"):
        w.channel = -1
    with pytest.raises(TraitError, match="must be an int"):
        w.channel = True
    with pytest.raises(TraitError, match="choose one of"):
        w.view = "3d"
    with pytest.raises(TraitError, match="choose one of"):
        w.norm = "log"
    with pytest.raises(TraitError, match="choose one of"):
        w.cmap = "jet"
    with pytest.raises(TraitError, match="choose one of"):
        w.page_size = 7
    with pytest.raises(TraitError, match="page=1 is out of range"):
        w.page = 1
    assert shown(w) == before and error(w) == ""


def test_attribution_messages_answer_into_attrib(w):
    w.layer, w.channel = "dw", 3
    message_from_browser(w, {"type": "guided_backprop"})
    gbp = browser_state(w)["_attrib"]["gbp"]
    assert (gbp["kind"], gbp["layer"], gbp["channel"], gbp["shape"]) == ("gbp", "dw", 3, [3, 32, 32])
    assert gbp["version"] == browser_state(w)["_maps"]["version"]
    g = w.guided_backprop("dw", 3).double()
    shown_values = g.clamp(gbp["mean"] - gbp["n_std"] * gbp["std"], gbp["mean"] + gbp["n_std"] * gbp["std"])
    # one item: the three colour planes share one range, which covers exactly the values shown
    one = codec.unpack(gbp)
    _within_half_step({**one, "codes": one["codes"][None]}, shown_values[None].float(), slice(0, 1))
    assert browser_state(w)["_input_png"]  # the attribution panels show the input
    message_from_browser(w, {"type": "grad_cam", "target": None})
    cam = browser_state(w)["_attrib"]["cam"]
    top = w.predictions(1)[0][0]
    assert (cam["kind"], cam["layer"], cam["target"], cam["label"], cam["shape"]) == ("cam", "dw", top, f"class {top}", [1, 32, 32])
    _within_half_step(codec.unpack(cam), w.grad_cam("dw")[None], slice(0, 1))
    message_from_browser(w, {"type": "grad_cam", "target": 4})
    assert browser_state(w)["_attrib"]["cam"]["target"] == 4
    assert "gbp" in browser_state(w)["_attrib"] and error(w) == "" and browser_state(w)["_status"] == "ready"


# ------------------------------------------------------------------------------ paging over the cap


def test_a_layer_over_the_cap_travels_page_by_page(wide):
    w, model = wide
    cap = _reference(w, model)
    info = cap.info("wide")
    lay = grids.layout(info)
    th, tw = lay["tile"]
    assert info.out_shape[0] * th * tw > rules.GRID_CAP_BYTES and not lay["maps_whole"]
    assert layer_info(w, "wide")["maps_whole"] is False
    tiles = _expected_tiles(cap, "wide")
    w.layer, w.view, w.page_size, w.channel = "wide", "maps", 64, 0
    for channel, page_size, page in [(0, 64, 0), (130, 64, 2), (299, 64, 4), (299, 128, 2), (10, 16, 0)]:
        w.page_size = page_size
        w.channel = channel
        assert w.page == page
        p = payload(w, "_maps")
        first = page * page_size
        n = min(300 - first, page_size)
        assert (p["layer"], p["first"], p["shape"], p["count"]) == ("wide", first, [n, th, tw], 300)
        assert np.array_equal(p["codes"], tiles[first : first + n])
        assert p["vmin"].tobytes() == cap.stats("wide")["min"].tobytes()  # every channel's range
    w.page_size = 64
    with sent_to_browser(w) as sent:
        send_from_browser(w, page=3)  # the browser turns the page
    assert payload(w, "_maps")["first"] == 3 * 64 and w.channel == 10 and "_maps" in keys_sent(sent)
    before = browser_state(w)["_maps"]
    with sent_to_browser(w) as sent:
        w.channel = 200  # on the page shown: nothing to send
    assert browser_state(w)["_maps"] is before and "_maps" not in keys_sent(sent)
    w.page = 0
    w.page = 3
    assert payload(w, "_maps")["first"] == 192


def test_filters_over_the_cap_travel_page_by_page(wide):
    w, model = wide
    w.layer, w.view, w.page_size, w.channel = "big", "filters", 64, 0
    assert layer_info(w)["filters_whole"] is False and layer_info(w)["maps_whole"] is True
    weight = model.big.weight.detach()
    for page in (0, 6, 2):
        w.page = page
        p = payload(w, "_filters")
        first, n = page * 64, min(400 - page * 64, 64)
        assert (p["first"], p["shape"], p["count"]) == (first, [n, 300, 3, 3], 400)
        _within_half_step(p, weight[first : first + n], slice(first, first + n))
    w.view = "maps"  # 400 maps of 16 x 16: under the cap, whole whatever the page
    p = payload(w, "_maps")
    assert (p["first"], p["shape"]) == (0, [400, 16, 16])


def test_side_view_of_paged_filters_always_holds_the_channels_filter(wide, tmp_path):
    w, _ = wide
    w.layer, w.view, w.page_size, w.channel = "big", "side", 64, 0
    w.page = 3  # a public trait, valid for the layer's filters; the side view shows one channel
    assert w.page == 3
    p = payload(w, "_filters")
    assert p["first"] <= w.channel < p["first"] + p["shape"][0]
    with Image.open(w.save_png(tmp_path / "side.png")) as im:  # the filter, map and overlay drawn
        assert im.size[0] >= 64 and len(im.convert("RGB").getcolors(1 << 24)) > 50


# ------------------------------------------------------------------------------ images


def test_several_images_each_with_its_own_capture(tiny_model):
    torch.manual_seed(5)
    first, second = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
    with FeatureMapExplorer(tiny_model, [first, second]) as w:
        images = browser_state(w)["_images"]
        assert [d["index"] for d in images] == [0, 1] and all(d["thumb"].startswith("data:image/png") for d in images)
        version = browser_state(w)["_header"]["version"]
        assert browser_state(w)["_versions"][0] == payload(w, "_maps")["version"] == version
        with sent_to_browser(w) as sent:
            send_from_browser(w, image_index=1)
        assert error(w) == "" and torch.equal(w.input_tensor, second) and "_maps" in keys_sent(sent)
        p = payload(w, "_maps")
        assert p["version"] == browser_state(w)["_header"]["version"] == browser_state(w)["_versions"][1] != version
        cap = _reference(w, tiny_model)
        assert np.array_equal(p["codes"], _expected_tiles(cap, "conv1"))
        assert [(d["index"], d["prob"]) for d in browser_state(w)["_header"]["predictions"]] == w.predictions(5)
        assert torch.equal(w.activation("dw"), exact_activation(tiny_model, second, "dw"))
        w.image_index = 0  # kept: the same capture, the same version
        assert payload(w, "_maps")["version"] == version and torch.equal(w.input_tensor, first)
        assert w.add_image(first.flip(-1), name="flipped") == 2
        assert [d["label"] for d in browser_state(w)["_images"]] == ["image 0", "image 1", "flipped"]
        with pytest.raises(TypeError, match="img is None"):
            w.add_image(None)
        assert len(w.images) == 3 and w.image_index == 0
        send_from_browser(w, image_index=3)
        assert names_field(error(w), "image_index") and w.image_index == 0
        with pytest.raises(TraitError, match="image_index=-1 is out of range"):
            w.image_index = -1
    with pytest.raises(ValueError, match="the list is empty"):
        FeatureMapExplorer(tiny_model, [])


def test_compare_sends_the_other_image_and_the_exact_difference(tiny_model):
    torch.manual_seed(6)
    first, second = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
    with FeatureMapExplorer(tiny_model, [first, second], layer="grouped") as w:
        assert browser_state(w)["_compare"] == {}
        with pytest.raises(ValueError, match="set compare to an image index first"):
            w.difference()
        w.compare = 1
        compared = browser_state(w)["_compare"]
        other = codec.unpack(compared["maps"])
        assert other["layer"] == "grouped" and other["version"] == browser_state(w)["_versions"][1]
        cap = capture(tiny_model, second)
        assert np.array_equal(other["codes"], _expected_tiles(cap, "grouped"))
        diff = w.difference("grouped")
        with torch.no_grad():
            exact = w.activation("grouped") - exact_activation(tiny_model, second, "grouped")
        assert torch.equal(diff, exact)
        d = codec.unpack(compared["diff"])
        assert d["kind"] == "diff" and d["shape"] == [16, 32, 32]  # 32 x 32: tiles at full size
        _within_half_step(d, diff, slice(0, 16))
        w.view, w.channel = "side", 4
        compared = browser_state(w)["_compare"]
        assert codec.unpack(compared["map"])["first"] == 4
        _within_half_step(codec.unpack(compared["map_diff"]), diff[4:5], slice(4, 5))
        w.view = "filters"  # nothing to compare there
        assert browser_state(w)["_compare"] == {}
        w.compare = -1
        w.view = "maps"
        assert browser_state(w)["_compare"] == {}
        with pytest.raises(TraitError, match="compare=2 is out of range"):
            w.compare = 2


@pytest.mark.parametrize("by", ["max", "mean", "active"])
def test_sort_orders_a_paged_layers_maps_by_score(wide, by):
    w, model = wide
    cap = _reference(w, model)
    w.layer, w.view, w.page_size, w.channel = "wide", "maps", 64, 0
    try:
        w.sort = by
        act = w.activation("wide").double().reshape(300, -1)
        scores = {"max": act.amax(1), "mean": act.mean(1), "active": (act > 0).double().mean(1)}[by].float().tolist()
        order = sorted(range(300), key=lambda c: (-scores[c], c))  # best first, ties in channel order
        assert browser_state(w)["_ranking"]["order"] == order
        assert [c for c, _ in w.rank_channels("wide", by=by)] == order
        tiles = _expected_tiles(cap, "wide")
        w.channel = order[70]  # the page that shows it: the second of the sorted order
        assert w.page == 1
        p = payload(w, "_maps")
        assert p["items"] == order[64:128] and np.array_equal(p["codes"], tiles[order[64:128]])
        w.page = 4
        p = payload(w, "_maps")
        assert p["items"] == order[256:] and np.array_equal(p["codes"], tiles[order[256:]])
    finally:
        w.sort = "channel"
    p = payload(w, "_maps")
    assert "items" not in p and p["first"] == w.page * 64
    with pytest.raises(TraitError, match="sort='size' is not allowed"):
        w.sort = "size"


# ------------------------------------------------------------------------------ new image


def test_set_image_sends_the_new_capture_and_failure_keeps_everything(w, tiny_model, tiny_input):
    w.layer, w.view = "grouped", "side"
    old = {k: browser_state(w)[k] for k in ("_maps", "_filters", "_map", "_input_png", "_header")}
    version = old["_map"]["version"]
    flipped = tiny_input.flip(-1) * 3
    w.set_image(flipped)
    state = browser_state(w)
    assert torch.equal(w.input_tensor, flipped)
    assert state["_map"]["version"] == state["_filters"]["version"] == version + 1
    assert state["_input_png"] != old["_input_png"]
    cap = _reference(w, tiny_model)
    assert np.array_equal(payload(w, "_map")["codes"][0], cap.maps("grouped")[0].numpy())
    assert [(d["index"], d["prob"]) for d in state["_header"]["predictions"]] == w.predictions(5)
    assert state["_header"]["predictions"] != old["_header"]["predictions"]
    w.view = "maps"
    assert payload(w, "_maps")["version"] == version + 1
    kept = shown(w)
    with pytest.raises((TypeError, ValueError)):
        w.set_image(None)
    assert shown(w) == kept and torch.equal(w.input_tensor, flipped)
    assert w.layer_names == ["conv1", "dw", "grouped"]


# ------------------------------------------------------------------------------ save_png


def _saved_grid(path) -> tuple[np.ndarray, dict, Image.Image]:
    img = Image.open(path)
    assert img.format == "PNG"
    box = json.loads(img.text["fmwidget:grid"])
    rgb = np.asarray(img.convert("RGB"))
    return rgb[box["y"] : box["y"] + box["height"], box["x"] : box["x"] + box["width"]], box, img


def _expected_grid(w, width: int) -> np.ndarray:
    """The maps grid drawn from what the browser holds, with the documented arithmetic."""
    p = payload(w, "_maps")
    count = p["count"]
    items = np.arange(w.page * w.page_size, min(count, (w.page + 1) * w.page_size))
    tiles = p["codes"][items - p["first"]]
    norm, cmap = rules.resolve(w.view, w.norm, w.cmap)
    tables = render.colour_tables(p["vmin"], p["vmax"], norm, cmap, items)
    layout = render.grid_layout(len(items), tiles.shape[1], tiles.shape[2], width)
    return render.draw_grid(tiles, tables, layout, render.hex_rgb(rules.CMAPS[cmap][2]))


@pytest.mark.parametrize(
    "selection, width",
    [
        ({}, 900),
        ({"layer": "grouped", "norm": "layer", "cmap": "gray", "page_size": 16}, 500),
        ({"layer": "dw", "norm": "symmetric", "cmap": "magma"}, 64),
        ({"layer": "grouped", "norm": "channel_symmetric", "cmap": "bwr", "channel": 9}, 2000),
    ],
)
def test_save_png_draws_the_maps_grid_with_the_documented_arithmetic(tiny_model, tmp_path, selection, width):
    torch.manual_seed(3)
    with FeatureMapExplorer(tiny_model, torch.randn(1, 3, 40, 40)) as w:
        for key in ("layer", "page_size", "norm", "cmap", "channel"):
            if key in selection:
                setattr(w, key, selection[key])
        out = w.save_png(tmp_path / "maps.png", width=width)
        assert out == tmp_path / "maps.png"
        grid, box, img = _saved_grid(out)
        expected = _expected_grid(w, width)
        assert grid.shape == expected.shape and np.array_equal(grid, expected)
        assert img.width >= box["x"] + box["width"] and box["y"] > 20  # a title above it


@pytest.mark.parametrize("norm", ["channel", "layer", "symmetric"])
def test_save_png_with_nan_tiles(tmp_path, norm):
    torch.manual_seed(4)
    with FeatureMapExplorer(LogNet().eval(), torch.randn(1, 3, 100, 100), layers=["conv", "log"]) as w:
        w.layer, w.norm = "log", norm
        grid, _, _ = _saved_grid(w.save_png(tmp_path / "nan.png", width=400))
        assert (payload(w, "_maps")["codes"] == 255).any()
        assert (grid == render.hex_rgb(rules.NAN_COLOR)).all(axis=-1).any()
        assert np.array_equal(grid, _expected_grid(w, 400))


def test_save_png_of_a_page_over_the_cap(wide, tmp_path):
    w, _ = wide
    w.layer, w.view, w.page_size, w.norm, w.cmap = "wide", "maps", 32, "layer", "viridis"
    w.channel = 100  # page 3 of 10
    grid, _, _ = _saved_grid(w.save_png(tmp_path / "page.png", width=700))
    assert payload(w, "_maps")["first"] == 96
    assert np.array_equal(grid, _expected_grid(w, 700))
    w.norm, w.cmap = "auto", "auto"


@pytest.mark.parametrize("view, layer", [("filters", "conv1"), ("filters", "dw"), ("filters", "grouped"),
                                         ("side", "grouped"), ("side", "conv1")])
def test_save_png_of_the_filters_and_side_views_has_a_title(w, tmp_path, view, layer):
    w.layer, w.view, w.channel = layer, view, 2
    img = Image.open(w.save_png(tmp_path / "view.png", width=600))
    rgb = np.asarray(img.convert("RGB"))
    assert img.width >= 600
    title = rgb[:40]
    assert (title.sum(axis=-1) < 100).any(), "no dark title text at the top"
    assert (rgb[40:] != 255).any(axis=-1).sum() > 100  # and pictures below it
    if view == "filters":
        assert "fmwidget:grid" in img.text


def test_save_png_refuses_bad_paths_and_widths(w, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"path=.*does not exist.*mkdir") as info:
        w.save_png(tmp_path / "no" / "such" / "dir" / "maps.png")
    assert "no/such/dir" in str(info.value) or "no\\such\\dir" in str(info.value)
    with pytest.raises(ValueError, match=r"path=.*should end in \.png"):
        w.save_png(tmp_path / "maps.jpg")
    with pytest.raises(TypeError, match="path must be a file name"):
        w.save_png(5)
    with pytest.raises(TypeError, match="path must be a file name"):
        w.save_png(None)
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        w.save_png(tmp_path / "folder.png")
    for width in (0, 63, -900, 900.0, True, "900", None):
        with pytest.raises(ValueError, match="width must be an int from 64 to 16384"):
            w.save_png(tmp_path / "maps.png", width=width)
    assert not (tmp_path / "maps.png").exists() and error(w) == ""


# ------------------------------------------------------------------------------ to_html


def _html_states(path) -> tuple[dict, list[str]]:
    """The embedded widget states by model id, and the model ids of the views on the page."""
    text = path.read_text(encoding="utf-8")
    (blob,) = re.findall(r'<script type="application/vnd.jupyter.widget-state\+json">(.*?)</script>', text, re.DOTALL)
    views = re.findall(r'<script type="application/vnd.jupyter.widget-view\+json">(.*?)</script>', text, re.DOTALL)
    return json.loads(blob)["state"], [json.loads(v)["model_id"] for v in views]


def _html_state(path, w) -> dict:
    """The exported widget's embedded state."""
    states, views = _html_states(path)
    assert views == [w.model_id]
    return states[w.model_id]["state"]


def test_to_html_holds_every_layers_grids(w, tiny_model, tmp_path):
    w.layer = "dw"
    out = w.to_html(tmp_path / "page.html", title="My <model>")
    assert out == tmp_path / "page.html"
    text = out.read_text(encoding="utf-8")
    assert "<title>My &lt;model&gt;</title>" in text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), "the page must load nothing from the network"
    state = _html_state(out, w)
    cap = _reference(w, tiny_model)
    bundle = {(p["kind"], p["layer"]): p for p in state["_bundle"]}
    assert set(bundle) == {(k, n) for n in cap.names for k in ("maps", "filters")}
    for name in cap.names:
        p = codec.unpack(bundle[("maps", name)])
        assert p["first"] == 0 and np.array_equal(p["codes"], _expected_tiles(cap, name))
        f = codec.unpack(bundle[("filters", name)])
        _within_half_step(f, getattr(tiny_model, name).weight.detach(), slice(None))
    assert state["_config"]["offline"] and state["_config"]["export_note"] == ""
    assert state["layer"] == "dw" and state["_error"] == "" and state["_esm"]
    assert state["_input_png"].startswith("data:image/png")


def test_to_html_layers_argument(w, tmp_path):
    state = _html_state(w.to_html(tmp_path / "two.html", layers=["grouped"]), w)
    assert {p["layer"] for p in state["_bundle"]} == {"conv1", "grouped"}  # the current one too
    assert "2 of the model's 3 layers" in state["_config"]["export_note"]
    with pytest.raises(TypeError, match="layers must be None or a non-empty list"):
        w.to_html(tmp_path / "x.html", layers="grouped")
    with pytest.raises(TypeError, match="layers must be None or a non-empty list"):
        w.to_html(tmp_path / "x.html", layers=[])
    with pytest.raises(ValueError, match="layers: 'nope' is not one of the offered layers"):
        w.to_html(tmp_path / "x.html", layers=["nope"])
    with pytest.raises(ValueError, match=r"should end in \.html"):
        w.to_html(tmp_path / "page.txt")
    with pytest.raises(FileNotFoundError, match="path=.*mkdir"):
        w.to_html(tmp_path / "missing" / "page.html")
    assert not (tmp_path / "x.html").exists()


def test_to_html_beyond_the_cap_holds_the_current_layer_and_its_neighbours(tiny_model, tiny_input, tmp_path, monkeypatch):
    with FeatureMapExplorer(tiny_model, tiny_input, layers="all") as w:
        assert w.layer_names == ["conv1", "relu", "dw", "grouped", "pool"]
        monkeypatch.setattr(export, "HTML_CAP_BYTES", 1000)
        w.layer = "pool"
        state = _html_state(w.to_html(tmp_path / "cap.html"), w)
        assert {p["layer"] for p in state["_bundle"]} == {"dw", "grouped", "pool"}  # 2 each side
        note = state["_config"]["export_note"]
        assert "layers 3 to 5 of 5" in note and "to_html(path, layers=[...])" in note
        w.layer = "dw"
        state = _html_state(w.to_html(tmp_path / "cap.html"), w)
        assert {p["layer"] for p in state["_bundle"]} == set(w.layer_names)
        assert "layers 1 to 5 of 5" in state["_config"]["export_note"]
        w.layer = "conv1"
        state = _html_state(w.to_html(tmp_path / "cap.html"), w)
        assert {p["layer"] for p in state["_bundle"]} == {"conv1", "relu", "dw"}


def test_to_html_embeds_only_this_widget(tiny_model, tiny_input, tmp_path):
    with FeatureMapExplorer(tiny_model, tiny_input) as w, FeatureMapExplorer(PagedCNN().eval(), tiny_input) as other:
        states, views = _html_states(w.to_html(tmp_path / "one.html"))
        assert views == [w.model_id]
        assert other.model_id not in states
        explorers = [k for k, e in states.items() if "_layers" in e["state"]]
        assert explorers == [w.model_id]
