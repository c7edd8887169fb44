"""The widget's Python side: public API, traits, validation, browser messages, cache, close."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from traitlets import TraitError

from _support import assert_untouched, hooks_of, snapshot
from fmwidget import FeatureMapExplorer
from fmwidget.capture import capture


def _png(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


@pytest.fixture
def w(tiny_model, tiny_input):
    widget = FeatureMapExplorer(tiny_model, tiny_input)
    yield widget
    widget.close()


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def test_first_picture_is_ready_when_constructor_returns(w):
    assert w.layer == "conv1" and w.channel == 0 and w.view == "maps"
    img = _png(w._grid)
    assert img.size == (w._grid_meta["width"], w._grid_meta["height"])
    assert w._grid_meta["layer"] == "conv1" and w._grid_meta["channels"][:8] == list(range(8))
    assert w._status == "ready" and w._error == ""
    assert [d["name"] for d in w._layers] == w.layer_names == ["conv1", "dw", "grouped"]
    assert w._header["input_size"] == [32, 32]
    assert w._input_png == "", "encoded only when a view needs it"
    w.view = "side"
    assert _png(w._input_png).size == (32, 32)


def test_public_api_shapes_and_exactness(w, tiny_model, tiny_input):
    assert torch.equal(w.input_tensor, tiny_input)
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


def test_layer_and_channel_changes_update_pictures(w):
    first = w._grid
    w.layer = "grouped"
    assert w._grid != first and w._grid_meta["layer"] == "grouped"
    w.channel = 15
    assert w.channel == 15
    w.layer = "dw"  # 8 channels: channel 15 no longer exists and falls back to 0
    assert w.channel == 0
    w.view = "filters"
    assert w._grid_meta["kind"] == "filters"
    w.view = "side"
    assert w._side["layer"] == "dw" and w._side["channel"] == 0
    assert w._side["map"]["url"].startswith("data:image/png")
    assert w._side["filter"]["url"].startswith("data:image/png")


def test_invalid_python_assignments_raise_clear_trait_errors(w):
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
        w.page_size = 7
    assert (w.layer, w.channel, w.view) == ("conv1", 0, "maps")


def test_browser_messages_are_validated_and_state_stays_consistent(w):
    w.set_state({"layer": "nope", "channel": 3})
    assert w.layer == "conv1" and w.channel == 3
    assert "nope" in w._error
    w.set_state({"layer": "grouped", "channel": 12})  # layer first, then the channel
    assert (w.layer, w.channel) == ("grouped", 12)
    assert w._error == ""
    w.set_state({"channel": 99})
    assert w.channel == 12 and "out of range" in w._error
    w.set_state({"_grid": "data:evil"})
    assert not w._grid.startswith("data:evil") and "may not set" in w._error
    w._on_custom_msg(w, {"type": "drop tables"}, [])
    assert "unknown message" in w._error
    w._on_custom_msg(w, {"type": "clear_error"}, [])
    assert w._error == ""


def test_widget_leaves_model_untouched(tiny_model, tiny_input):
    tiny_model.train()
    before = snapshot(tiny_model)
    with FeatureMapExplorer(tiny_model, tiny_input) as w:
        w.activation("dw")
        w.layer = "grouped"
        w.view = "side"
    assert_untouched(tiny_model, before)
    assert w._cap.nbytes == 0 and len(w._cache) == 0


def test_paging_large_layers(resnet, cat):
    w = FeatureMapExplorer(resnet, cat, page_size=64)
    w.layer = "layer4.1.conv2"  # 512 channels
    assert w._grid_meta["n_pages"] == 8
    w.channel = 300
    assert w.page == 4 and 300 in w._grid_meta["channels"]
    w.page = 7
    assert w._grid_meta["channels"][0] == 448
    w.view = "filters"  # 512 inputs: pages of input channels
    assert w._grid_meta["n_in_pages"] == 8
    w.in_page = 2
    assert w._grid_meta["in_channels"][0] == 128
    w.close()


def test_neighbouring_layers_are_prefetched(resnet, cat):
    w = FeatureMapExplorer(resnet, cat)
    w._cache.wait()
    misses = w._cache.misses
    w.layer = w.layer_names[1]
    assert w._cache.misses == misses  # served from the prefetch
    w.close()


def test_set_image_recomputes_and_failure_keeps_state(w, tiny_input):
    old = w._grid
    w.set_image(tiny_input.flip(-1))
    assert w._grid != old
    kept = w._grid
    with pytest.raises((TypeError, ValueError)):
        w.set_image(None)
    assert w._grid == kept and w.layer_names == ["conv1", "dw", "grouped"]


def test_constructor_rejects_unknown_keywords(tiny_model, tiny_input):
    with pytest.raises(TypeError, match="unexpected keyword.*colour"):
        FeatureMapExplorer(tiny_model, tiny_input, colour="red")
    with pytest.raises(TypeError, match="torch.nn.Module or a torchvision model name"):
        FeatureMapExplorer(3, tiny_input)
    assert hooks_of(tiny_model) == 0


def test_initial_trait_values(tiny_model, tiny_input):
    w = FeatureMapExplorer(tiny_model, tiny_input, layer="grouped", channel=5, view="filters")
    assert (w.layer, w.channel, w.view) == ("grouped", 5, "filters")
    assert w._grid_meta["kind"] == "filters" and w._grid_meta["layer"] == "grouped"
    w.close()


def test_memory_of_views_is_under_half_of_float32(resnet, cat):
    cap = capture(resnet, torch.randn(1, 3, 224, 224))
    float32 = sum(4 * int(np.prod(i.out_shape)) for i in cap.layers)
    assert cap.nbytes <= 0.5 * float32


def test_save_png_shows_the_current_view(w, tmp_path):
    grid = _png(w._grid)
    out = w.save_png(tmp_path / "maps.png")
    saved = Image.open(out)
    assert saved.width >= grid.width and saved.height > grid.height  # enlarged, plus title and legend
    w.view = "side"
    side = Image.open(w.save_png(tmp_path / "side.png"))
    assert side.size != saved.size
    with pytest.raises(ValueError, match="should end in .png"):
        w.save_png(tmp_path / "maps.jpg")
    # The saved grid is the widget's picture, enlarged with nearest neighbours: every source
    # pixel's colour appears as a block in the saved file.
    w.view = "maps"
    small = np.asarray(_png(w._grid).convert("RGBA"))
    big = np.asarray(Image.open(w.save_png(tmp_path / "again.png")).convert("RGBA"))
    zoom = (big.shape[1]) // small.shape[1]
    y0 = 24  # below the title line
    block = big[y0 : y0 + small.shape[0] * zoom : zoom, : small.shape[1] * zoom : zoom, :3]
    opaque = small[..., 3] == 255
    assert np.array_equal(block[opaque], small[..., :3][opaque])


def test_export_paths_are_checked(w, tmp_path):
    with pytest.raises(TypeError, match="path must be a file name"):
        w.save_png(5)
    with pytest.raises(ValueError, match="should end in .html"):
        w.to_html(tmp_path / "page.txt")


def test_prefetch_predicts_the_page_a_move_will_show(resnet, cat):
    w = FeatureMapExplorer(resnet, cat, page_size=64)
    w.layer = "layer4.0.conv1"  # 512 channels
    w.channel = 300  # page 4
    w._cache.wait()
    misses = w._cache.misses
    w.layer = "layer4.0.conv2"  # 512 channels: channel 300 stays, page 4, prefetched
    assert w.page == 4 and w._cache.misses == misses
    w.layer = "layer4.0.conv1"
    w._cache.wait()
    misses = w._cache.misses
    w.layer = "layer3.1.conv2"  # 256 channels: channel 300 falls back to 0, page 0, prefetched
    assert (w.channel, w.page) == (0, 0) and w._cache.misses == misses
    w.layer = "layer4.0.conv2"
    w.view = "filters"
    w.in_page = 3  # 512 input channels, 8 pages of 64
    w._cache.wait()
    misses = w._cache.misses
    w.layer = "layer4.0.downsample.0"  # the next conv: input page back to 0, prefetched
    assert w.in_page == 0 and w._cache.misses == misses
    w.close()


def _fresh(w: FeatureMapExplorer) -> str:
    """The current grid picture built now, in this thread, without the cache."""
    return w._build(w._key()).url


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"layer": "layer2.0.conv1", "channel": 70, "page_size": 32},
        {"layer": "layer1.0.conv2", "norm": "layer", "cmap": "gray"},
    ],
)
def test_first_picture_is_built_beside_the_forward_pass_and_is_the_same(resnet, cat, kwargs):
    w = FeatureMapExplorer(resnet, cat, **kwargs)
    try:
        # The constructor's picture came from the capture's early work: a cache hit, no build.
        assert (w._cache.hits, w._cache.misses) == (1, 0)
        assert w._grid_meta["layer"] == kwargs.get("layer", "conv1")
        assert w.page == kwargs.get("channel", 0) // w.page_size
        assert w._grid == _fresh(w)
        w.set_image(cat.rotate(90))  # the same for a new image, on the page shown
        assert (w._cache.hits, w._cache.misses) == (2, 0)
        assert w._grid == _fresh(w)
    finally:
        w.close()


def test_views_other_than_maps_build_their_first_picture_after_the_capture(tiny_model, tiny_input):
    w = FeatureMapExplorer(tiny_model, tiny_input, view="filters")
    assert (w._cache.hits, w._cache.misses) == (0, 1)
    assert w._grid == _fresh(w)
    w.close()
    with pytest.raises(TraitError, match="page_size"):  # a bad value: no early work, the same error
        FeatureMapExplorer(tiny_model, tiny_input, page_size=20)
    assert hooks_of(tiny_model) == 0


@pytest.mark.parametrize("bad", ["channel=99", "layer='nope'", "norm='nope'", "page_size=np.array([64, 32])"])
def test_a_failed_constructor_frees_its_capture_and_the_process_exits(bad):
    # The capture's compaction waits, paused, in a shared thread until the widget resumes it; a
    # constructor that fails must release it at once, or interpreter exit waits for that thread.
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, torch; sys.path.insert(0, 'tests')\n"
        "from _support import TinyCNN; from fmwidget import FeatureMapExplorer\n"
        "from traitlets import TraitError\n"
        f"try: FeatureMapExplorer(TinyCNN().eval(), torch.randn(1, 3, 32, 32), {bad})\n"
        "except TraitError as err: print('TraitError', err)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("TraitError"), done.stdout + done.stderr
