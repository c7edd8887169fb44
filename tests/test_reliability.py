"""Reliability of the widget as a user meets it: every failure is a clear, deliberate error,
the user's model is left exactly as it was, and the widget keeps its state and stays usable.

Lower-level checks of the same refusals live in test_loading.py, test_capture.py,
test_models.py and test_attribution.py; here everything goes through ``FeatureMapExplorer``,
and the browser's side goes through the widget's comm (tests/_support.py).
"""

from __future__ import annotations

import copy
import gc
import socket
import struct
import threading
import weakref
import zlib

import numpy as np
import psutil
import pytest
import torch
from _support import (
    TinyCNN,
    assert_untouched,
    browser_state,
    error,
    hooks_of,
    keys_sent,
    layer_info,
    message_from_browser,
    one_thread,  # noqa: F401  (an autouse fixture)
    payload,
    send_from_browser,
    sent_to_browser,
    shown,
    snapshot,
    status,
)
from torch import nn
from traitlets import TraitError

from fmwidget import FeatureMapExplorer, loading

# Error types a user may see. Never AttributeError, IndexError, KeyError, ZeroDivisionError,
# a bare RuntimeError from torch, or a PIL error.
DELIBERATE = (TypeError, ValueError, FileNotFoundError, ConnectionError, TraitError)


def _training_tiny() -> TinyCNN:
    """The tiny model in training mode, with one frozen layer and existing gradients: all of
    this must come back exactly as it was."""
    torch.manual_seed(0)
    m = TinyCNN().train()
    m.dw.eval()  # mixed modes come back mixed
    m.conv1.bias.requires_grad_(False)
    for p in m.parameters():
        p.grad = torch.full_like(p, 0.5)
    return m


@pytest.fixture
def model():
    return _training_tiny()


def untouched(model: nn.Module, before: dict) -> None:
    """``assert_untouched`` plus the values of existing ``.grad`` tensors."""
    assert_untouched(model, before)
    assert all(p.grad is not None and bool((p.grad == 0.5).all()) for p in model.parameters())


def state(w: FeatureMapExplorer) -> dict:
    """The public state and everything the browser holds."""
    return shown(w)


def expect(exc, call, *words):
    """``call()`` raises ``exc`` (a deliberate type) whose message contains every word."""
    with pytest.raises(exc) as info:
        call()
    assert isinstance(info.value, DELIBERATE), type(info.value)
    for word in words:
        assert word.lower() in str(info.value).lower(), (word, str(info.value))
    return info.value


def png_claiming(width: int, height: int) -> bytes:
    """A valid 1 x 1 gray PNG whose header claims ``width`` x ``height`` (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))


# ------------------------------------------------------------------------------------ images

def _bad_images(tmp_path):
    (tmp_path / "notes.txt").write_text("not a picture")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "bomb.png").write_bytes(png_claiming(40000, 40000))
    nan = np.random.default_rng(0).random((32, 32, 3), dtype=np.float32)
    nan[3, 4, 1] = np.nan
    inf = np.ones((32, 32, 3), np.float32)
    inf[0, 0, 0] = np.inf
    return {
        "none": (None, TypeError, ["img is None", "file path"]),
        "missing path": (str(tmp_path / "nope.jpg"), FileNotFoundError, ["img", "nope.jpg", "check the spelling"]),
        "not an image": (tmp_path / "notes.txt", ValueError, ["img", "notes.txt", "not an image", "png"]),
        "empty file": (tmp_path / "empty.png", ValueError, ["img", "empty", "0 bytes"]),
        "bomb": (tmp_path / "bomb.png", ValueError, ["img", "decompression bomb", "megapixels"]),
        "1-D array": (np.zeros(100, np.uint8), ValueError, ["img", "1-D", "(H, W, 3)"]),
        "5-D array": (np.zeros((1, 1, 8, 8, 3), np.uint8), ValueError, ["img", "5-D", "arr[0]"]),
        "7 channels": (np.zeros((16, 16, 7), np.uint8), ValueError, ["img", "7 channels", "arr[..., :3]"]),
        "string array": (np.full((16, 16, 3), "a"), TypeError, ["img", "dtype", "numbers"]),
        "NaN": (nan, ValueError, ["img", "NaN", "nan_to_num"]),
        "Inf": (inf, ValueError, ["img", "Inf", "nan_to_num"]),
        "4-channel tensor": (torch.zeros(1, 4, 32, 32), ValueError, ["img", "4 channels", "3"]),
        "1 x 1 tensor": (torch.zeros(1, 3, 1, 1), ValueError, ["img", "1 x 1", "resize"]),
        "garbage bytes": (b"\x00\xffnot an image at all" * 50, ValueError, ["img", "not an image"]),
    }


BAD_IMAGES = ["none", "missing path", "not an image", "empty file", "bomb", "1-D array", "5-D array",
              "7 channels", "string array", "NaN", "Inf", "4-channel tensor", "1 x 1 tensor", "garbage bytes"]


@pytest.mark.parametrize("case", BAD_IMAGES)
def test_bad_image_in_constructor_is_a_clear_error_and_model_untouched(model, tmp_path, case):
    img, exc, words = _bad_images(tmp_path)[case]
    before = snapshot(model)
    expect(exc, lambda: FeatureMapExplorer(model, img), *words)
    untouched(model, before)


@pytest.mark.parametrize("case", BAD_IMAGES)
def test_bad_image_in_set_image_keeps_the_widget(model, tiny_input, tmp_path, case):
    img, exc, words = _bad_images(tmp_path)[case]
    before = snapshot(model)
    with FeatureMapExplorer(model, tiny_input) as w:
        w.layer, w.channel = "grouped", 5
        kept, x = state(w), w.input_tensor
        expect(exc, lambda: w.set_image(img), *words)
        assert state(w) == kept and torch.equal(w.input_tensor, x)
        w.layer = "dw"  # still usable
        assert payload(w, "_maps")["layer"] == "dw" and error(w) == ""
        with torch.no_grad():
            ref = model.dw(torch.relu(model.conv1(tiny_input)))[0]
        assert torch.allclose(w.activation("dw"), ref, atol=1e-6)
    untouched(model, before)


def test_too_small_for_the_network_names_the_size_and_the_fix(model):
    """8 x 8 passes the image checks, but a 11 x 11 kernel cannot run on it: the model's own
    error comes back as a ValueError that says what to do, with torch's error as the cause."""
    net = nn.Sequential(nn.Conv2d(3, 4, 11), nn.ReLU()).train()
    before = snapshot(net)
    err = expect(ValueError, lambda: FeatureMapExplorer(net, torch.rand(1, 3, 8, 8)),
                 "model", "(1, 3, 8, 8)", "transform=")
    assert isinstance(err.__cause__, RuntimeError)
    assert_untouched(net, before)


@pytest.mark.timeout(30)
def test_silent_url_times_out_instead_of_hanging(model, tiny_input, monkeypatch):
    monkeypatch.setattr(loading, "URL_TIMEOUT_S", 0.3)
    before = snapshot(model)
    with socket.socket() as listener:  # the kernel accepts connections; nobody ever answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/cat.jpg"
        expect(ConnectionError, lambda: FeatureMapExplorer(model, url), "img", url, "0.3 s")
        with FeatureMapExplorer(model, tiny_input) as w:
            kept = state(w)
            expect(ConnectionError, lambda: w.set_image(url), url)
            assert state(w) == kept
    untouched(model, before)


def test_huge_photo_is_resized_not_refused(model):
    photo = np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)  # 12 MP
    before = snapshot(model)
    with FeatureMapExplorer(model, photo) as w:
        assert w.input_tensor.shape == (1, 3, 224, 224) and browser_state(w)["_header"]["input_size"] == [224, 224]
    untouched(model, before)


# ------------------------------------------------------------------------------------ models

def test_unknown_torchvision_name_suggests_close_names(tiny_input):
    expect(ValueError, lambda: FeatureMapExplorer("resnet5O", tiny_input), "model='resnet5O'",
           "did you mean 'resnet50'", "torch.nn.Module")
    expect(ValueError, lambda: FeatureMapExplorer("vgg", tiny_input), "'vgg11'")


@pytest.mark.parametrize("layers", [None, "all"])
def test_model_without_2d_conv(tiny_input, layers):
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10), nn.ReLU()).train()
    before = snapshot(mlp)
    err = expect(ValueError, lambda: FeatureMapExplorer(mlp, tiny_input, layers=layers), "model")
    # The advice fits the call: "try layers='all'" only when it was not already tried.
    assert ("layers='all'" in str(err)) == (layers is None)
    assert_untouched(mlp, before)


class Exploding(TinyCNN):
    """A half-broken custom model: its forward raises after the first convolution ran."""

    def forward(self, x):
        x = self.relu(self.conv1(x))
        return x[:, :, 0][99]  # IndexError from deep inside the user's code


def test_model_whose_forward_raises(tiny_input):
    torch.manual_seed(0)
    model = Exploding().train()
    model.dw.eval()
    before = snapshot(model)
    err = expect(ValueError, lambda: FeatureMapExplorer(model, tiny_input),
                 "model", "forward pass raised IndexError", "(1, 3, 32, 32)")
    assert isinstance(err, RuntimeError)  # also what code catching torch errors expects
    assert isinstance(err.__cause__, IndexError)
    assert_untouched(model, before)


def test_model_that_fails_only_with_gradients_reports_attribution_errors(model, tiny_input):
    """Guided backprop / Grad-CAM run with autograd on; a model that breaks then is reported
    as a ValueError naming the model (Python) or in ``_error`` (browser), state unchanged."""

    class GradHostile(TinyCNN):
        def forward(self, x):
            if torch.is_grad_enabled():
                raise ZeroDivisionError("this model only runs under no_grad")
            return super().forward(x)

    torch.manual_seed(0)
    net = GradHostile().train()
    before = snapshot(net)
    with FeatureMapExplorer(net, tiny_input) as w:
        expect(ValueError, lambda: w.guided_backprop("dw", 0), "model", "ZeroDivisionError", "gradients")
        expect(ValueError, lambda: w.grad_cam("dw"), "model", "ZeroDivisionError")
        kept = state(w)
        message_from_browser(w, {"type": "grad_cam", "target": None})
        assert "ZeroDivisionError" in error(w) and state(w) == kept and status(w) == "ready"
        message_from_browser(w, {"type": "guided_backprop"})
        assert "gradients" in error(w) and state(w) == kept and status(w) == "ready"
    assert_untouched(net, before)


def test_training_mode_model_comes_back_in_training_mode(tiny_input):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Conv2d(8, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    ).train()
    for p in net.parameters():
        p.grad = torch.full_like(p, 0.5)
    before = snapshot(net)
    with FeatureMapExplorer(net, tiny_input) as w:
        first = w.activation("4")
        w.layer, w.view = "4", "side"
        message_from_browser(w, {"type": "guided_backprop"})
        message_from_browser(w, {"type": "grad_cam", "target": 2})
        assert error(w) == "" and {"gbp", "cam"} <= set(browser_state(w)["_attrib"])
        w.set_image(tiny_input.flip(-1))
        w.set_image(tiny_input)
        # eval mode inside: dropout off and BatchNorm's running statistics not updated
        assert torch.equal(w.activation("4"), first)
    untouched(net, before)


def test_model_on_the_meta_device(tiny_model, tiny_input):
    meta = copy.deepcopy(tiny_model).to("meta")
    expect(ValueError, lambda: FeatureMapExplorer(meta, tiny_input), "model", "'meta' device", "to_empty")
    assert hooks_of(meta) == 0


def test_image_tensor_on_the_meta_device(model, tiny_input):
    before = snapshot(model)
    expect(ValueError, lambda: FeatureMapExplorer(model, tiny_input.to("meta")), "img", "t.cpu()")
    untouched(model, before)


@pytest.mark.parametrize("device", ["meta", torch.device("meta"), "cuda:0", "cuda:3"])
def test_device_argument_that_does_not_match_the_model(model, tiny_input, device):
    before = snapshot(model)
    expect(ValueError, lambda: FeatureMapExplorer(model, tiny_input, device=device), "device=", "cpu")
    untouched(model, before)


def test_stateless_model_refuses_the_meta_device(tiny_input):
    pool = nn.Sequential(nn.MaxPool2d(2), nn.AvgPool2d(2))  # no parameters: device= is used
    expect(ValueError, lambda: FeatureMapExplorer(pool, tiny_input, layers="all", device="meta"),
           "device='meta'", "device=None")
    with FeatureMapExplorer(pool, tiny_input, layers="all", device="cpu") as w:
        assert w.layer_names == ["0", "1"] and w.activation("1").shape == (3, 8, 8)


@pytest.mark.parametrize("device", [None, "cpu", torch.device("cpu")])
def test_cpu_device_logic(model, tiny_input, device):
    before = snapshot(model)
    with FeatureMapExplorer(model, tiny_input, device=device) as w:
        assert browser_state(w)["_header"]["device"] == "cpu"
        assert w.activation("dw").device.type == "cpu"
        assert w.guided_backprop("dw", 1).device.type == "cpu"
    untouched(model, before)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_models_in_other_precisions_work(tiny_model, tiny_input, dtype):
    """GPU models are often half precision: the float32 image is given in the model's dtype."""
    net = copy.deepcopy(tiny_model).to(dtype)
    try:
        net(tiny_input.to(dtype))
    except RuntimeError:  # pragma: no cover - a CPU build without that dtype's convolution
        pytest.skip(f"no {dtype} convolution on this CPU")
    before = snapshot(net)
    with FeatureMapExplorer(net, tiny_input) as w:
        ref = tiny_model.dw(torch.relu(tiny_model.conv1(tiny_input)))[0]
        act = w.activation("dw")
        assert act.dtype == torch.float32 and torch.allclose(act, ref.detach(), atol=0.05, rtol=0.05)
        w.layer, w.view = "grouped", "filters"
        assert payload(w, "_filters")["layer"] == "grouped" and error(w) == ""
        w.view = "side"
        assert payload(w, "_map")["layer"] == "grouped" and error(w) == ""
        # the codes are those of the model's own precision, read back as float32
        flt = payload(w, "_filters")
        ref_w = net.grouped.weight.detach().float().reshape(16, -1)
        assert flt["vmin"].tobytes() == ref_w.amin(1).numpy().tobytes()
    assert_untouched(net, before)


class TupleOut(TinyCNN):
    def forward(self, x):
        logits = super().forward(x)
        return logits, logits.softmax(1)


class DictOut(TinyCNN):
    def forward(self, x):
        return {"out": super().forward(x)}


@pytest.mark.parametrize("cls", [TupleOut, DictOut])
def test_models_with_tuple_or_dict_output(tiny_input, cls):
    torch.manual_seed(0)
    net = cls().eval()
    before = snapshot(net)
    with FeatureMapExplorer(net, tiny_input) as w:
        assert w.layer_names == ["conv1", "dw", "grouped"]
        w.layer = "grouped"
        assert payload(w, "_maps")["layer"] == "grouped"
        assert w.guided_backprop("grouped", 3).shape == (3, 32, 32)  # needs no class scores
        header = browser_state(w)["_header"]
        assert header["predictions"] == [] and "not a vector of class scores" in header["predictions_note"]
        expect(TypeError, lambda: w.predictions(), "output", cls.__name__[:-3].lower(), "wrap the model")
        expect(TypeError, lambda: w.grad_cam("dw"), "output", "logits")
        kept = state(w)
        for msg in ({"type": "grad_cam", "target": None}, {"type": "grad_cam", "target": 1}):
            message_from_browser(w, msg)
            assert "wrap the model" in error(w) and state(w) == kept and status(w) == "ready"
    assert_untouched(net, before)


# ------------------------------------------------------------------------------ widget state

@pytest.fixture
def w_all(model, tiny_input):
    """A widget offering every 4-D layer: the ReLU and the pooling layer have no weights."""
    before = snapshot(model)
    widget = FeatureMapExplorer(model, tiny_input, layers="all")
    widget.layer, widget.channel = "dw", 3
    yield widget
    widget.close()
    untouched(model, before)


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("layer", "conv", ["layer='conv'", "did you mean 'conv1'"]),
        ("layer", "features.0", ["layer='features.0'", "offered layers"]),
        ("layer", 3, ["'layer' trait", "expected a unicode string", "int 3"]),
        ("layer", None, ["'layer' trait", "None"]),
        ("channel", 8, ["channel=8 is out of range", "0 to 7"]),
        ("channel", -1, ["channel=-1 is out of range", "0 to 7"]),
        ("channel", 2**53, ["out of range"]),
        ("channel", 10**40, ["channel=<133-bit int> is out of range"]),
        ("channel", 2.5, ["'channel' trait", "expected an int", "float 2.5"]),
        ("channel", "3", ["'channel' trait", "expected an int"]),
        ("channel", True, ["channel must be an int", "bool"]),
        ("view", "3d", ["view='3d'", "choose one of 'maps', 'filters', 'side'"]),
        ("norm", None, ["norm", "None"]),
        ("norm", "log", ["norm='log' is not allowed", "'channel_symmetric'"]),
        ("cmap", "jet", ["cmap='jet' is not allowed", "'viridis'"]),
        ("page", 1, ["page=1 is out of range", "0 to 0"]),
        ("page", False, ["page must be an int", "bool"]),
        ("in_page", -1, ["in_page=-1 is out of range"]),
        ("page_size", 10, ["page_size=10 is not allowed", "16, 32, 64, 128, 256"]),
        ("page_size", 64.5, ["'page_size' trait", "expected an int"]),
    ],
)
def test_invalid_state_gets_the_same_answer_from_python_and_the_browser(w_all, key, value, words):
    kept = state(w_all)
    with pytest.raises(TraitError) as info:
        setattr(w_all, key, value)
    python_says = str(info.value)
    for word in words:
        assert word.lower() in python_says.lower(), (word, python_says)
    assert state(w_all) == kept and error(w_all) == ""
    send_from_browser(w_all, {key: value})
    assert python_says in error(w_all) and error(w_all).startswith("Refused from the browser")
    assert state(w_all) == kept
    message_from_browser(w_all, {"type": "clear_error"})
    assert error(w_all) == ""
    w_all.channel = 4  # still usable
    assert payload(w_all, "_maps")["layer"] == "dw" and error(w_all) == ""


def test_a_refused_browser_value_is_sent_back(w_all):
    """The browser shows its own value until Python says otherwise: a refused field is re-sent."""
    with sent_to_browser(w_all) as sent:
        send_from_browser(w_all, channel=99, layer="nope", norm="layer")
    assert w_all.norm == "layer" and (w_all.layer, w_all.channel) == ("dw", 3)
    assert {"channel", "layer"} <= keys_sent(sent) and "_error" in keys_sent(sent)
    assert "channel=99" in error(w_all) and "layer='nope'" in error(w_all)
    send_from_browser(w_all, channel=2)  # a valid update clears a refusal's message
    assert error(w_all) == "" and w_all.channel == 2


@pytest.mark.parametrize("key", ["_maps", "_filters", "_map", "_config", "_layers", "_header", "_error", "_attrib",
                                 "_input_png", "_status", "_esm", "layout"])
def test_the_browser_may_not_set_python_traits(w_all, key):
    kept = state(w_all)
    forged = {"_input_png": "data:evil", "_error": "", "_status": "busy", "_esm": "alert(1)"}.get(key, {"forged": True})
    send_from_browser(w_all, {key: forged, "channel": 5})
    assert f"may not set {key!r}" in error(w_all)
    assert browser_state(w_all)[key] != forged
    assert w_all.channel == 5  # the valid field of the same update is applied
    assert state(w_all) == {**kept, "channel": 5}


def test_unknown_and_malformed_browser_updates(w_all):
    kept = state(w_all)
    send_from_browser(w_all, {"colour": "red"})
    assert "unknown field 'colour' ignored" in error(w_all) and state(w_all) == kept
    send_from_browser(w_all, {"x" * 1000: 1})
    assert len(error(w_all)) < 600 and state(w_all) == kept
    for update in ([1, 2], "layer", None, 3):
        send_from_browser(w_all, update)
        assert "not an object" in error(w_all) and state(w_all) == kept


def test_filters_view_of_a_layer_without_weights(w_all):
    for set_view in (lambda: setattr(w_all, "view", "filters"), lambda: send_from_browser(w_all, view="filters")):
        w_all.layer = "relu"
        kept = browser_state(w_all)["_maps"]
        set_view()
        assert w_all.view == "maps" and "'relu' (ReLU) has no filters" in error(w_all)
        assert browser_state(w_all)["_maps"] is kept and payload(w_all, "_maps")["layer"] == "relu"
        message_from_browser(w_all, {"type": "clear_error"})
    assert layer_info(w_all, "relu")["weight_shape"] is None
    w_all.layer, w_all.view = "dw", "filters"  # a conv layer: the filters view works
    send_from_browser(w_all, layer="pool")  # the browser moves to a layer without weights
    assert w_all.layer == "pool" and w_all.view == "maps" and "has no filters" in error(w_all)
    assert payload(w_all, "_maps")["layer"] == "pool"
    w_all.view = "side"  # the side view of a layer without weights: the map and the input
    assert payload(w_all, "_map")["layer"] == "pool" and browser_state(w_all)["_input_png"]
    assert payload(w_all, "_filters")["layer"] != "pool"


def test_the_reason_for_a_view_falling_back_survives_another_refusal(w_all):
    send_from_browser(w_all, layer="pool", view="filters", channel=99)
    assert w_all.view == "maps" and w_all.layer == "pool"
    assert "channel=99" in error(w_all)
    assert "filters" in error(w_all)  # why the view is not the one asked for


@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda w: w.activation("nope"), ValueError, ["name='nope'", "offered layers"]),
        (lambda w: w.activation("layer1"), ValueError, ["name='layer1'"]),
        (lambda w: w.activation(None), TypeError, ["name must be a layer name (str)"]),
        (lambda w: w.filters("nope"), ValueError, ["name='nope'", "did you mean"]),
        (lambda w: w.filters("relu"), ValueError, ["name='relu' (ReLU) has no convolution weight", "'conv1'"]),
        (lambda w: w.filters("pool"), ValueError, ["no convolution weight"]),
        (lambda w: w.to_numpy("fc"), ValueError, ["name='fc'", "offered layers"]),
        (lambda w: w.guided_backprop("dw", 8), ValueError, ["channel=8 is out of range", "0 to 7"]),
        (lambda w: w.guided_backprop("dw", -1), ValueError, ["channel=-1 is out of range"]),
        (lambda w: w.guided_backprop("dw", 1.5), TypeError, ["channel must be an int"]),
        (lambda w: w.guided_backprop("nope", 0), ValueError, ["name='nope'"]),
        (lambda w: w.grad_cam("dw", 10), ValueError, ["target=10 is out of range", "0 to 9"]),
        (lambda w: w.grad_cam("dw", [1]), TypeError, ["target must be an int"]),
        (lambda w: w.predictions(0), ValueError, ["k must be at least 1"]),
        (lambda w: w.save_png(3), TypeError, ["path must be a file name"]),
        (lambda w: w.save_png("view.gif"), ValueError, ["should end in .png"]),
        (lambda w: w.save_png("view.png", width=10), ValueError, ["width must be an int from 64 to 16384"]),
        (lambda w: w.to_html("page.txt"), ValueError, ["should end in .html"]),
        (lambda w: w.to_html("page.html", layers=["nope"]), ValueError, ["layers: 'nope'"]),
        (lambda w: w.set_image(None), TypeError, ["img is None"]),
    ],
)
def test_public_methods_refuse_bad_arguments_and_keep_state(w_all, call, exc, words):
    kept = state(w_all)
    expect(exc, lambda: call(w_all), *words)
    assert state(w_all) == kept and error(w_all) == ""


@pytest.mark.parametrize(
    "content, words",
    [
        ({"type": "grad_cam", "target": 10}, ["target=10 is out of range", "0 to 9"]),
        ({"type": "grad_cam", "target": -1}, ["target=-1 is out of range"]),
        ({"type": "grad_cam", "target": "cat"}, ["target must be an int"]),
        ({"type": "grad_cam", "target": 1.0}, ["target must be an int"]),
        ({"type": "grad_cam", "target": True}, ["target must be an int"]),
        ({"type": "grad_cam", "target": 10**40}, ["target=<133-bit int> is out of range"]),
        ({"type": "teleport"}, ["unknown message 'teleport'", "guided_backprop"]),
        ({"type": None}, ["unknown message 'None'"]),
        ({}, ["unknown message"]),
        (["guided_backprop"], ["unknown message 'list'"]),
        ("guided_backprop", ["unknown message 'str'"]),
        ({"type": "predictions"}, ["unknown message 'predictions'"]),
        ({"type": "add_image"}, ["0 files' bytes", "one image at a time"]),
        ({"type": "open_top", "rank": 0}, ["rank=0 is out of range"]),
        ({"type": "open_top", "rank": "first"}, ["rank must be an int"]),
        (None, ["unknown message 'NoneType'"]),
    ],
)
def test_bad_custom_messages_set_error_and_keep_state(w_all, content, words):
    message_from_browser(w_all, {"type": "guided_backprop"})
    kept = state(w_all)
    message_from_browser(w_all, content)
    for word in words:
        assert word.lower() in error(w_all).lower(), (word, error(w_all))
    assert state(w_all) == kept and status(w_all) == "ready"
    message_from_browser(w_all, {"type": "clear_error"})
    assert error(w_all) == "" and state(w_all) == kept


def test_guided_backprop_follows_the_valid_channel_only(w_all):
    """A channel out of range from the browser is refused, so guided backprop never sees it."""
    send_from_browser(w_all, channel=8)
    assert w_all.channel == 3 and "out of range" in error(w_all)
    message_from_browser(w_all, {"type": "guided_backprop", "channel": 8})
    gbp = browser_state(w_all)["_attrib"]["gbp"]
    assert (gbp["layer"], gbp["channel"]) == ("dw", 3) and status(w_all) == "ready"


def test_closed_widget_says_so(model, tiny_input, tmp_path):
    before = snapshot(model)
    w = FeatureMapExplorer(model, tiny_input)
    w.close()
    w.close()  # twice is fine
    for call in (lambda: w.activation("dw"), lambda: w.predictions(), lambda: w.set_image(tiny_input),
                 lambda: w.layer_names, lambda: w.filters("dw"), lambda: w.guided_backprop("dw", 0),
                 lambda: w.grad_cam("dw"), lambda: w.save_png(tmp_path / "x.png"),
                 lambda: w.to_html(tmp_path / "x.html"), lambda: w.to_numpy()):
        expect(ValueError, call, "closed", "create a new one")
    expect(TraitError, lambda: setattr(w, "layer", "dw"), "closed")
    send_from_browser(w, layer="dw")  # (no comm any more: the public set_state)
    assert "closed" in error(w) and w.layer == "conv1"
    assert not list(tmp_path.iterdir())
    untouched(model, before)


# --------------------------------------------------------------------------------- resources

class StepCNN(nn.Module):
    """Big enough answers (64-128 channels, pages) to make a leak visible, fast enough for 1000 steps."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 64, 3, padding=1)
        self.c2 = nn.Conv2d(64, 128, 3, padding=1)
        self.c3 = nn.Conv2d(128, 96, 3, stride=2, padding=1)
        self.c4 = nn.Conv2d(96, 80, 1)

    def forward(self, x):
        return self.c4(torch.relu(self.c3(torch.relu(self.c2(torch.relu(self.c1(x)))))))


def _rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


@pytest.mark.timeout(300)
def test_thousand_switches_keep_memory_flat():
    torch.manual_seed(0)
    model = StepCNN().eval()
    w = FeatureMapExplorer(model, torch.randn(1, 3, 40, 40), page_size=32)
    names = w.layer_names
    counts = {d["name"]: d["out_shape"][0] for d in browser_state(w)["_layers"]}
    rng = np.random.default_rng(0)

    def switch(i: int) -> None:
        if i % 2:
            send_from_browser(w, layer=names[int(rng.integers(len(names)))])
        else:
            w.channel = int(rng.integers(counts[w.layer]))
        if i % 97 == 0:
            w.view = {"maps": "filters", "filters": "side", "side": "maps"}[w.view]
        trait = {"maps": "_maps", "filters": "_filters", "side": "_map"}[w.view]
        p = browser_state(w)[trait]
        assert p["layer"] == w.layer
        if w.view == "side":
            assert p["first"] == w.channel

    for i in range(200):  # warm-up: allocator pools, PNG encoder state
        switch(i)
    start = _rss()
    with sent_to_browser(w, values=False) as sent:
        for i in range(1000):
            switch(i)
    grown = _rss() - start
    assert grown < 0.05 * start, f"RSS grew by {grown / 2**20:.1f} MiB of {start / 2**20:.0f} MiB"
    answers = [m for m in sent if m["method"] == "update" and {"_maps", "_filters", "_map"} & set(m["state"])]
    assert len(answers) > 300  # the answers really were rebuilt on the way
    assert hooks_of(model) == 0 and error(w) == ""
    w.close()


@pytest.mark.parametrize("how", ["close", "context manager"])
def test_close_frees_the_widget_and_leaves_nothing_on_the_model(tiny_input, how):
    model = _training_tiny()
    before = snapshot(model)
    w = FeatureMapExplorer(model, tiny_input)
    w.layer, w.view = "grouped", "filters"
    message_from_browser(w, {"type": "guided_backprop"})
    message_from_browser(w, {"type": "grad_cam", "target": 3})
    w.grad_cam("dw")
    assert error(w) == "" and hooks_of(model) == 0
    if how == "close":
        w.close()
    else:
        with w:
            pass
    assert w.comm is None
    with pytest.raises(ValueError, match="closed"):
        w.activation("dw")
    ref = weakref.ref(w)
    del w
    gc.collect()
    assert ref() is None, "something still holds the closed widget"
    untouched(model, before)
    # Nothing else holds the model either (no hook, registry or cache of fmwidget's).
    model_ref = weakref.ref(model)
    del model
    gc.collect()
    assert model_ref() is None


def test_dropped_widget_is_garbage_collected_with_nothing_left_on_the_model(model, tiny_input):
    before = snapshot(model)
    refs = []
    for _ in range(3):
        with FeatureMapExplorer(model, tiny_input) as w:
            w.layer, w.view = "dw", "side"
            w.guided_backprop("dw", 2)
            refs.append(weakref.ref(w))
        del w
    gc.collect()
    assert all(r() is None for r in refs)
    untouched(model, before)
    # Failed constructions leave nothing behind either.
    for bad in (None, torch.zeros(1, 3, 1, 1)):
        with pytest.raises((TypeError, ValueError)):
            FeatureMapExplorer(model, bad)
    with pytest.raises(TraitError):
        FeatureMapExplorer(model, tiny_input, channel=99)
    gc.collect()
    untouched(model, before)


def test_widgets_start_no_threads(model, tiny_input):
    """Everything is done when a call returns: no thread outlives a widget, good or failed
    (a thread left waiting would also keep the interpreter from exiting)."""
    before = set(threading.enumerate())
    with FeatureMapExplorer(model, tiny_input) as w:
        w.layer, w.view = "dw", "side"
        message_from_browser(w, {"type": "guided_backprop"})
        w.set_image(tiny_input.flip(-1))
        assert set(threading.enumerate()) == before
    for bad in ({"channel": 99}, {"layer": "nope"}, {"norm": "nope"}, {"page_size": 20}):
        with pytest.raises(TraitError):
            FeatureMapExplorer(model, tiny_input, **bad)
    assert set(threading.enumerate()) == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_half_model_stays_on_the_gpu_and_its_memory_is_freed(tiny_model, tiny_input):  # pragma: no cover
    net = copy.deepcopy(tiny_model).cuda().half()
    before = snapshot(net)
    expect(ValueError, lambda: FeatureMapExplorer(net, tiny_input, device="cpu"), "device='cpu'", "cuda")
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    with FeatureMapExplorer(net, tiny_input) as w:
        assert browser_state(w)["_header"]["device"].startswith("cuda")
        act = w.activation("dw")
        assert act.device.type == "cpu" and act.dtype == torch.float32
        assert w.guided_backprop("dw", 1).device.type == "cpu"
        w.layer = "grouped"
        assert payload(w, "_maps")["layer"] == "grouped" and error(w) == ""
        with torch.no_grad():
            ref = net.grouped(torch.relu(net.dw(torch.relu(net.conv1(tiny_input.cuda().half())))))[0].float().cpu()
        np.testing.assert_allclose(payload(w, "_maps")["vmax"], ref.reshape(16, -1).amax(1).numpy(), rtol=1e-2, atol=1e-3)
    del w
    gc.collect()
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == baseline
    assert all(p.device.type == "cuda" and p.dtype == torch.float16 for p in net.parameters())
    assert_untouched(net, before)
