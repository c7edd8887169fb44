"""Pictures sent ahead: the likely next grid goes to the browser before the slider moves, and
no picture the browser holds is sent twice (docs/design.md, "Pictures sent ahead")."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision

from fmwidget import FeatureMapExplorer


class Wire:
    """Records what the widget sends to the browser (what the comm would carry)."""

    def __init__(self, widget: FeatureMapExplorer) -> None:
        self.messages: list[dict] = []
        widget._send = lambda msg, buffers=None: self.messages.append(json.loads(json.dumps(msg)))

    def take(self) -> list[dict]:
        out, self.messages = self.messages, []
        return out


def _updates(messages):
    return [m["state"] for m in messages if m["method"] == "update"]


def _ahead(messages):
    return [m["content"] for m in messages if m["method"] == "custom" and m["content"]["type"] == "picture"]


def _bytes(messages) -> int:
    return sum(len(json.dumps(m)) for m in messages)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


@pytest.fixture
def w(model):
    widget = FeatureMapExplorer(model, torch.rand(1, 3, 64, 64))
    wire = Wire(widget)
    widget._on_custom_msg(widget, {"type": "hello"}, [])  # a page has built the model
    widget._cache.wait()
    yield widget, wire
    widget.close()


def test_picture_ids_name_the_picture(w, model):
    widget, _ = w
    pid = widget._grid_meta["picture"]
    assert pid == widget._grid_id and len(pid) == 16
    widget.layer = widget.layer_names[1]
    assert widget._grid_meta["picture"] == widget._grid_id != pid
    widget.layer = widget.layer_names[0]
    assert widget._grid_id == pid, "the same view has the same id"
    widget.norm = "layer"
    assert widget._grid_id != pid, "another style is another picture"
    widget.norm = "auto"
    widget.set_image(torch.rand(1, 3, 64, 64))
    assert widget._grid_id != pid, "a new image is a new picture"


def test_hello_sends_the_next_layer_ahead(w):
    widget, wire = w
    sent = _ahead(wire.take())
    assert len(sent) == 1, "exactly one picture ahead"
    pic = sent[0]
    assert pic["meta"]["layer"] == widget.layer_names[1] and pic["url"].startswith("data:image/png;base64,")
    widget.layer = widget.layer_names[1]
    assert pic["url"] == widget._grid and pic["id"] == widget._grid_id, "the same picture as the kernel's own"


def test_a_move_to_the_picture_sent_ahead_sends_only_its_meta(w):
    widget, wire = w
    wire.take()
    widget.layer = widget.layer_names[1]
    widget._cache.wait()
    messages = wire.take()
    update = {k: v for state in _updates(messages) for k, v in state.items()}
    assert "_grid_meta" in update and update["_grid_meta"]["picture"] == widget._grid_id
    assert "_grid" not in update and "_grid_id" not in update, "the browser already holds it"
    # ... and the next one goes ahead, in the direction of the move
    assert [p["meta"]["layer"] for p in _ahead(messages)] == [widget.layer_names[2]]


def test_stepping_through_layers_sends_each_picture_once(w):
    widget, wire = w
    names = widget.layer_names
    wire.take()
    seen: list[str] = []
    for name in names[1:8]:
        widget.layer = name
        widget._cache.wait()
        messages = wire.take()
        pictures = [p["id"] for p in _ahead(messages)]
        pictures += [s["_grid_id"] for s in _updates(messages) if "_grid" in s]
        assert len(pictures) <= 1, f"{name}: {len(pictures)} pictures in one step"
        assert not set(pictures) & set(seen), "a picture went twice"
        seen += pictures
        # a step costs about one picture, as it did before pictures went ahead
        assert _bytes(messages) < len(widget._grid) + 8000
    # back one layer: that picture and the one before it are still held, nothing is sent
    wire.take()
    widget.layer = names[6]
    widget._cache.wait()
    messages = wire.take()
    assert not any("_grid" in s for s in _updates(messages)) and not _ahead(messages)
    # far back, then on backwards: the direction of the move decides which neighbour goes
    widget.layer = names[12]
    widget._cache.wait()
    wire.take()
    widget.layer = names[11]
    widget._cache.wait()
    assert [p["meta"]["layer"] for p in _ahead(wire.take())] == [names[10]]


def test_a_jump_sends_the_picture_and_one_ahead(w):
    widget, wire = w
    wire.take()
    names = widget.layer_names
    widget.layer = names[10]
    widget._cache.wait()
    messages = wire.take()
    assert [s["_grid_id"] for s in _updates(messages) if "_grid" in s] == [widget._grid_id]
    assert [p["meta"]["layer"] for p in _ahead(messages)] == [names[11]]


def test_resend_and_a_new_page(w):
    widget, wire = w
    names = widget.layer_names
    widget.layer = names[1]
    widget._cache.wait()
    wire.take()
    # a view that lacks the named picture asks for it
    widget._on_custom_msg(widget, {"type": "resend_grid"}, [])
    update = _updates(wire.take())
    assert update and update[0]["_grid"] == widget._grid and update[0]["_grid_id"] == widget._grid_id
    # a reloaded page holds only the current picture: nothing older is counted on
    widget._on_custom_msg(widget, {"type": "hello"}, [])
    widget._cache.wait()
    wire.take()
    widget.layer = names[0]
    messages = wire.take()
    assert any("_grid" in s for s in _updates(messages)), "layer 0 was sent to the old page only"
    assert widget._error == ""


def test_nothing_goes_ahead_without_a_page_or_in_the_side_view(model):
    widget = FeatureMapExplorer(model, torch.rand(1, 3, 64, 64))
    wire = Wire(widget)
    try:
        widget.layer = widget.layer_names[1]
        widget._cache.wait()
        assert not _ahead(wire.take()), "no page said hello"
        widget._on_custom_msg(widget, {"type": "hello"}, [])
        widget._cache.wait()
        assert len(_ahead(wire.take())) == 1
        widget.view = "side"
        widget.layer = widget.layer_names[3]
        widget._cache.wait()
        assert not _ahead(wire.take())
    finally:
        widget.close()
