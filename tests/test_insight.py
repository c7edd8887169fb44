"""Many images, compare, sort and scan through the public API and the browser's messages.

Each test here once caught a bug: a compared image evicted while it was shown, a sort that
cannot be computed leaving the browser waiting, a page that could not be left in a sorted
view, a scan of a one-shot generator that the side view and ``save_png`` could not read back.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _support import (
    TinyCNN,
    WideCNN,
    browser_state,
    error,
    hooks_of,
    message_from_browser,
    names_field,
    one_thread,  # noqa: F401  (an autouse fixture)
    payload,
    send_from_browser,
)
from PIL import Image
from torch import nn

from fmwidget import FeatureMapExplorer
from fmwidget.capture import exact_activation


def _images(n: int, size: int = 32, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 3, size, size, generator=g) for _ in range(n)]


class FullyConv(nn.Module):
    """Ends in a feature map: no vector of class scores (a segmentation-like model)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        return self.conv2(self.relu(self.conv1(x)))


def test_compared_image_stays_while_the_strip_walks_past_the_kept_captures(tiny_model):
    images = _images(7)
    with FeatureMapExplorer(tiny_model, images, layer="grouped") as w:
        send_from_browser(w, compare=0)
        for i in range(1, 7):  # more images than the captures kept: the compared one stays
            send_from_browser(w, image_index=i)
            state = browser_state(w)
            assert error(w) == "" and w.compare == 0
            versions = state["_versions"]
            assert versions[0] is not None and versions[i] == state["_header"]["version"]
            assert state["_compare"]["maps"]["version"] == versions[0]
            assert sum(v is not None for v in versions) <= 4
            exact = exact_activation(tiny_model, images[i], "grouped") - exact_activation(tiny_model, images[0], "grouped")
            assert torch.equal(w.difference(), exact)
        assert hooks_of(tiny_model) == 0


def test_add_image_lists_it_with_no_capture_until_it_is_shown(tiny_model, tiny_input):
    with FeatureMapExplorer(tiny_model, tiny_input) as w:
        assert w.add_image(tiny_input.flip(-1), name="flipped") == 1
        state = browser_state(w)
        assert [d["label"] for d in state["_images"]] == ["image 0", "flipped"]
        assert state["_versions"][1] is None and state["_versions"][0] == state["_header"]["version"]
        w.image_index = 1
        assert browser_state(w)["_versions"][1] == browser_state(w)["_header"]["version"]
        w.set_image(tiny_input * 2)  # a new image in that place: named by its place
        assert [d["label"] for d in browser_state(w)["_images"]] == ["image 0", "image 1"]
        assert torch.equal(w.input_tensor, tiny_input * 2)


def test_compare_of_an_image_the_layer_does_not_match_goes_back_with_a_reason():
    torch.manual_seed(0)
    model = FullyConv().eval()
    small, large = torch.randn(1, 3, 16, 16), torch.randn(1, 3, 24, 24)
    with FeatureMapExplorer(model, [small, large]) as w:
        send_from_browser(w, compare=1)
        assert w.compare == -1 and browser_state(w)["_compare"] == {}
        assert names_field(error(w), "compare") and "16" in error(w) and "24" in error(w)
        send_from_browser(w, layer="conv2")  # still usable
        assert payload(w, "_maps")["layer"] == "conv2"


def test_sort_by_contribution_without_class_scores_goes_back_to_channel_order():
    torch.manual_seed(0)
    with FeatureMapExplorer(FullyConv().eval(), torch.randn(1, 3, 16, 16)) as w:
        send_from_browser(w, sort="contribution")
        assert w.sort == "channel" and names_field(error(w), "sort") and "channel number" in error(w)
        assert browser_state(w)["_ranking"] == {} and "items" not in payload(w, "_maps")
        send_from_browser(w, sort="max")  # a score that needs no classes still works
        assert w.sort == "max" and browser_state(w)["_ranking"]["by"] == "max"


def test_a_sorted_view_follows_the_channel_and_keeps_the_page_the_browser_picks():
    torch.manual_seed(0)
    model = WideCNN().eval()
    with FeatureMapExplorer(model, torch.randn(1, 3, 64, 64), layer="wide", page_size=64, channel=5) as w:
        send_from_browser(w, sort="mean")
        order = browser_state(w)["_ranking"]["order"]
        assert w.page == order.index(5) // 64  # the new order shows the selected channel
        send_from_browser(w, page=3)  # and a page picked afterwards is kept
        assert w.page == 3 and payload(w, "_maps")["items"] == order[192:256]
        send_from_browser(w, layer="big")  # a new layer: its order, and the channel's page in it
        ranked = browser_state(w)["_ranking"]
        assert ranked["layer"] == "big" and w.page == ranked["order"].index(w.channel) // 64
        send_from_browser(w, sort="channel")
        assert browser_state(w)["_ranking"] == {} and w.page == w.channel // 64


@pytest.mark.parametrize("kind", ["list", "generator"])
def test_scan_feeds_the_side_view_save_png_and_open_top(tiny_model, tmp_path, kind):
    images = _images(12, seed=3)
    source = [x[0] for x in images] if kind == "list" else (x[0] for x in images)
    with FeatureMapExplorer(tiny_model, images[0], layer="dw", view="side", channel=2) as w:
        result = w.scan(source, k=4, batch_size=5)
        assert result.n_images == 12 and not result.stopped and hooks_of(tiny_model) == 0
        scores = torch.stack([exact_activation(tiny_model, x, "dw")[2].amax() for x in images])
        best = torch.argsort(scores, descending=True, stable=True)[:4].tolist()
        sent = browser_state(w)["_top"]
        assert (sent["layer"], sent["channel"], sent["n_images"]) == ("dw", 2, 12)
        assert [item["index"] for item in sent["items"]] == best
        assert [item["score"] for item in sent["items"]] == pytest.approx(scores[best].tolist(), rel=0, abs=1e-5)
        path = w.save_png(tmp_path / "side.png")  # with the top patches where they can be read
        assert Image.open(path).size[0] > 0 and error(w) == ""
        if kind == "generator":  # read once: no pictures, and every way to ask says why
            assert all(item["thumb"] == "" for item in sent["items"])
            with pytest.raises(TypeError, match="generator.*cannot be read again"):
                w.top_images("dw", 2)
            message_from_browser(w, {"type": "open_top", "rank": 0})
            assert "cannot be read again" in error(w) and len(w.images) == 1
            return
        top = w.top_images("dw", 2)
        assert [t.index for t in top] == best and all(t.patch.size[0] > 0 for t in top)
        assert all(item["thumb"].startswith("data:image/png") for item in sent["items"])
        message_from_browser(w, {"type": "open_top", "rank": 0})  # open the best one
        assert error(w) == "" and len(w.images) == 2 and w.image_index == 1
        assert torch.equal(w.input_tensor, images[best[0]])
        assert browser_state(w)["_images"][1]["label"] == f"scanned #{best[0]}"


def test_an_image_the_model_fails_on_is_not_shown(tiny_input):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 30 * 30, 5)).eval()
    with FeatureMapExplorer(model, tiny_input) as w:  # 32 x 32 only: the Linear fixes the size
        shown = browser_state(w)["_maps"]
        index = w.add_image(torch.randn(1, 3, 40, 40), name="too large")  # runs when shown
        send_from_browser(w, image_index=index)
        assert w.image_index == 0 and "forward pass raised" in error(w) and "(1, 3, 40, 40)" in error(w)
        assert browser_state(w)["_maps"] == shown and browser_state(w)["_versions"][index] is None
        assert hooks_of(model) == 0 and not model.training


def test_numpy_ints_select_like_python_ints(tiny_model, tiny_input):
    with FeatureMapExplorer(tiny_model, [tiny_input, tiny_input.flip(-1)]) as w:
        w.channel = np.int64(3)
        w.image_index = np.int64(1)
        assert (w.channel, w.image_index) == (3, 1) and type(w.channel) is int


def test_guided_backprop_position_as_list_or_tuple(tiny_model, tiny_input):
    with FeatureMapExplorer(tiny_model, tiny_input) as w:
        as_tuple = w.guided_backprop("dw", 1, position=(3, 4))
        assert torch.equal(w.guided_backprop("dw", 1, position=[3, 4]), as_tuple)
        assert not torch.equal(w.guided_backprop("dw", 1, position=(0, 0)), as_tuple)
        assert hooks_of(tiny_model) == 0
