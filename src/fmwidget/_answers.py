"""The explorer's answers: the data traits that the current selection needs (docs/design.md).

A mixin of :class:`fmwidget.FeatureMapExplorer`. :meth:`Answers._answer` runs once after every
selection change (a browser message with several fields answers once); a data trait that
already holds what is asked for is left as it is, so an unchanged answer is neither rebuilt nor
sent.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch

from . import attribution, capture, codes, export, grids, insight, preprocess

_THUMBS_KEPT = 64  # top-image thumbnails kept (a channel's strip is about 9 of ~5 KB each)
_RANKINGS_KEPT = 16  # rankings kept, by (layer, capture, score): going back to a layer is free


class Answers:
    """Building and setting the data traits (mixed into the widget)."""

    # ------------------------------------------------------------------ what is shown
    def _order(self, info: capture.LayerInfo) -> list[int] | None:
        """The channels in the chosen sort order, once ranked (None for channel order)."""
        if self.sort == "channel":
            return None
        ranking = self._rankings.get((info.name, self._version, self.sort))
        return ranking["order"] if ranking else None

    def _position(self, channel: int) -> int:
        """Where ``channel`` is in the shown order (its index in the grid): the maps view only
        is sorted (js/state.js positionOf follows the same rule)."""
        order = self._order(self._info()) if self.view == "maps" else None
        return order.index(channel) if order else channel

    def _items(self, info: capture.LayerInfo, kind: str) -> list[int] | range:
        """The channels (or filters) an answer of ``kind`` carries for the current selection."""
        total = info.out_shape[0] if kind == "maps" else info.weight_shape[0]
        if grids.layout(info)[f"{kind}_whole"]:
            return range(total)
        order = self._order(info) if kind == "maps" else None
        start = self.page * self.page_size
        if self.view == "side":  # the side view shows the selected channel's filter: its page
            start = self.channel // self.page_size * self.page_size
        if order:
            return order[start : start + self.page_size]
        return range(start, min(total, start + self.page_size))

    @staticmethod
    def _holds(current: dict, version: int, layer: str, items, other: int | None = None) -> bool:
        """Whether payload ``current`` already carries ``items`` of ``layer`` for ``version``."""
        if current.get("version") != version or current.get("layer") != layer or current.get("other") != other:
            return False
        shape = current.get("shape") or [0]
        if isinstance(items, range):
            return "items" not in current and current.get("first") == items.start and shape[0] == len(items)
        return current.get("items") == list(items)

    # ------------------------------------------------------------------ the answer
    def _answer(self) -> None:
        """Set the data traits the current selection needs; an unchanged one is not rebuilt."""
        if not self._ready or self._batching or self._closed:
            return
        info = self._info()
        try:
            with self.hold_sync():
                self._rank(info)
                if self.view == "filters" and not info.weight_shape:
                    raise ValueError(f"layer {info.name!r} ({info.type}) has no filters; showing its feature maps instead.")
                if self.view == "maps":
                    items = self._items(info, "maps")
                    if not self._holds(self._maps, self._version, info.name, items):
                        self._maps = grids.maps_payload(self._cap, info, self._version, items)
                elif info.weight_shape:
                    items = self._items(info, "filters")
                    if not self._holds(self._filters, self._weights_version, info.name, items):
                        weight = capture.weight(self._model, info.name)
                        self._filters = grids.filters_payload(weight, info, self._weights_version, items, bgr=self._bgr)
                if self.view == "side":
                    items = range(self.channel, self.channel + 1)
                    if not self._holds(self._map, self._version, info.name, items):
                        self._map = grids.map_payload(self._cap, info, self._version, self.channel)
                    self._show_input()
                self._compare = self._compared(info)
                self._top = self._top_json(info)
        except Exception as err:  # noqa: BLE001 - shown in the widget, which stays usable
            self._report(err)
            # what caused it is undone, so that the widget does not wait for it forever
            with self._adjusting():
                if self.view == "filters" and not info.weight_shape:
                    self.view = "maps"
                if isinstance(err, _CompareError):
                    self.compare = -1
                    self._compare = {}
                if isinstance(err, _RankError):
                    self.sort = "channel"
            self._answer()

    def _rank(self, info: capture.LayerInfo) -> None:
        """Rank the layer for the maps view's sort order (once per layer, image and score)."""
        if self.sort == "channel":
            if self._ranking:
                self._ranking = {}
            return
        if self.view != "maps":
            return
        key = (info.name, self._version, self.sort)
        if key not in self._rankings:
            try:
                scores, target = insight.channel_scores(self._model, self._x, info.name, self.sort, device=self._device)
            except Exception as err:  # e.g. "contribution" for a model without class scores
                raise _RankError(f"sort={self.sort!r}: {err} Sorting by channel number instead.") from err
            ranked = insight.rank(scores)
            self._rankings[key] = {
                "layer": info.name, "version": self._version, "by": self.sort, "target": target,
                "label": self._label(target) if target is not None else None,
                "order": [c for c, _ in ranked], "scores": [float(s) for s in scores.tolist()],
            }
            while len(self._rankings) > _RANKINGS_KEPT:
                self._rankings.popitem(last=False)
        self._rankings.move_to_end(key)
        shown = self._ranking
        if (shown.get("layer"), shown.get("version"), shown.get("by")) == key:
            return  # the order shown already: the page is the browser's (or the user's) choice
        self._ranking = self._rankings[key]
        with self._adjusting():  # a new order: the selected channel stays in view, on its page
            self.page = self._channel_page(info)

    def _compared(self, info: capture.LayerInfo) -> dict:
        """The second image's data and the difference, for the current selection (compare)."""
        if self.compare < 0 or self.compare == self.image_index or self.view == "filters":
            return {}
        try:
            other, cap = self._gallery.capture(self.compare, protect={self.image_index})
        except Exception as err:
            raise _CompareError(f"compare: the model failed on image {self.compare}: {err}") from err
        self._versions = self._versions_json()  # its capture is kept now: the browser can say so
        items = self._items(info, "maps") if self.view == "maps" else range(self.channel, self.channel + 1)
        held = self._compare.get("diff" if self.view == "maps" else "map_diff", {})
        if self._holds(held, self._version, info.name, items, other):  # its difference says it all
            return self._compare
        b_info = cap.info(info.name) if info.name in cap.names else None
        if b_info is None or b_info.out_shape != info.out_shape:
            raise _CompareError(
                f"compare: image {self.compare} gives layer {info.name!r} "
                f"{'no map' if b_info is None else 'a map of shape ' + str(b_info.out_shape)}, image "
                f"{self.image_index} one of {info.out_shape}; compare images of one size."
            )
        return self._compare_payloads(info, cap, other, items)

    def _compare_payloads(self, info: capture.LayerInfo, cap: capture.Capture, other: int, items) -> dict:
        """The second image's payload and the difference's, for ``items`` (maps view: a grid;
        side view: one channel at full resolution)."""
        diff = self._difference(info.name, other)
        if self.view == "maps":
            return {"maps": grids.maps_payload(cap, info, other, items),
                    "diff": grids.maps_payload(diff, info, self._version, items, kind="diff", other=other)}
        return {"map": grids.map_payload(cap, info, other, items.start),
                "map_diff": grids.map_payload(diff, info, self._version, items.start, kind="map_diff", other=other)}

    def _difference(self, layer: str, other: int):
        """The exact difference at ``layer``, encoded, kept for the last pair of images (one)."""
        key = (layer, self._version, other)
        if self._diff_kept is None or self._diff_kept[0] != key:
            x2 = self._gallery.items[self.compare].x
            diff = insight.difference(self._model, self._x, x2, layer, device=self._device)
            self._diff_kept = (key, codes.encode(diff))  # each channel its own exact range
        return self._diff_kept[1]

    def _top_json(self, info: capture.LayerInfo) -> dict:
        """The selected channel's top images of the last scan (side view), with thumbnails."""
        result = self._scan_result
        if self.view != "side" or result is None or info.name not in result.layers:
            return {}
        if (self._top.get("layer"), self._top.get("channel"), self._top.get("scan")) == (info.name, self.channel, self._scan_serial):
            return self._top
        entries = []
        for entry in result.top(info.name, self.channel):
            key = (self._scan_serial, info.name, self.channel, entry.rank)
            if key not in self._thumbs:
                try:
                    self._thumbs[key] = _thumbnail(result.patch(entry))
                except TypeError:  # a one-shot source (a generator) cannot be read again
                    self._thumbs[key] = ""
                while len(self._thumbs) > _THUMBS_KEPT:
                    self._thumbs.popitem(last=False)
            entries.append({"rank": entry.rank, "index": entry.index, "score": entry.score,
                            "box": list(entry.box), "source": str(entry.source), "thumb": self._thumbs[key]})
        return {"layer": info.name, "channel": self.channel, "scan": self._scan_serial, "items": entries,
                "n_images": result.n_images}

    # ------------------------------------------------------------------ descriptions
    def _header_json(self) -> dict:
        h, w = self._x.shape[-2:]
        header = {
            "model": self._model_label,
            "input_size": [int(h), int(w)],
            "device": str(capture.model_device(self._model)),
            "notes": list(self._notes),
            "version": self._version,
            "weights_version": self._weights_version,
            "predictions": [],
            "predictions_note": "",
        }
        try:
            top = attribution.top_classes(self._capture().output, 5)
        except (TypeError, ValueError):
            header["predictions_note"] = "The model's output is not a vector of class scores, so there are no predictions."
            return header
        named = bool(self._labels) and len(self._labels) == self._n_classes()
        header["predictions"] = [{"index": i, "label": self._label(i), "prob": p} for i, p in top]
        if not named:
            header["predictions_note"] = (
                "No class names: pass labels=[...] (one name per model output, in order) to "
                "FeatureMapExplorer to name them."
            )
        return header

    def _label(self, index: int) -> str:
        if self._labels and index < len(self._labels):
            return str(self._labels[index])
        return f"class {index}"

    def _images_json(self) -> list[dict]:
        """The strip: a label and a thumbnail per image (made once, and only for a strip)."""
        out = []
        strip = len(self._gallery) > 1
        for i, item in enumerate(self._gallery.items):
            if strip and item.thumb is None:
                item.thumb = self._gallery.thumbnail(i)
            out.append({"index": i, "label": item.label, "thumb": item.thumb or ""})
        return out

    def _versions_json(self) -> list:
        """Each image's kept capture version, or None: the browser draws an image by it."""
        return [self._gallery.version(i) for i in range(len(self._gallery))]

    def _show_input(self) -> None:
        """Send the input picture (the side view and the attribution panels show it); encoded
        on first need, not in the constructor, which the first view does not use."""
        if not self._input_url:
            self._input_url = export.png_data_url(preprocess.display_image(self._x, self._transform))
        self._input_png = self._input_url

    @property
    def _x(self) -> torch.Tensor:
        return self._gallery.items[self.image_index].x

    def _n_classes(self) -> int:
        return int(attribution.class_scores(self._capture().output).numel())


class _CompareError(ValueError):
    """The second image cannot be compared (the selection goes back to no comparison)."""


class _RankError(ValueError):
    """The sort order cannot be computed (the selection goes back to channel order)."""


def _thumbnail(img: Any, size: int = 96) -> str:
    img = img.copy()
    img.thumbnail((size, size))
    return export.png_data_url(img)


def new_state() -> dict:
    """The mixin's own attributes, set by the widget's constructor."""
    return {"_rankings": OrderedDict(), "_diff_kept": None, "_thumbs": OrderedDict(), "_scan_serial": 0,
            "_batching": False, "_weights_version": 1}
