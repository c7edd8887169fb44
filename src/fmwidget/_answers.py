"""The explorer's answers: the data traits that the current selection needs (docs/design.md).

A mixin of :class:`fmwidget.FeatureMapExplorer`. :meth:`Answers._answer` runs after every
selection change; a data trait that already holds what is asked for is left as it is, so an
unchanged answer is neither rebuilt nor sent.
"""

from __future__ import annotations

import base64
import io
from collections import OrderedDict
from typing import Any

from . import attribution, capture, export, grids, insight, preprocess

_THUMBS_KEPT = 64  # top-image thumbnails kept (a channel's strip is about 9 of ~5 KB each)


class Answers:
    """Building and setting the data traits (mixed into the widget)."""

    # ------------------------------------------------------------------ what is shown
    def _layout(self, info: capture.LayerInfo) -> dict:
        return grids.layout(info)

    def _order(self, info: capture.LayerInfo) -> list[int] | None:
        """The channels in the chosen sort order (None for plain channel order)."""
        ranking = self._ranking
        if self.sort == "channel" or not ranking or ranking.get("layer") != info.name or ranking.get("version") != self._version or ranking.get("by") != self.sort:
            return None
        return ranking["order"]

    def _position(self, channel: int) -> int:
        """Where ``channel`` is in the shown order (its index in the grid)."""
        order = self._order(self._info()) if self.view == "maps" else None
        return order.index(channel) if order else channel

    def _items(self, info: capture.LayerInfo, kind: str) -> list[int] | range:
        """The channels (or filters) an answer of ``kind`` carries for the current selection."""
        total = info.out_shape[0] if kind == "maps" else info.weight_shape[0]
        if self._layout(info)[f"{kind}_whole"]:
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
        if not self._ready:
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
                    if not self._holds(self._filters, self._version, info.name, items):
                        weight = capture.weight(self._model, info.name)
                        self._filters = grids.filters_payload(weight, info, self._version, items, bgr=self._bgr)
                if self.view == "side":
                    items = range(self.channel, self.channel + 1)
                    if not self._holds(self._map, self._version, info.name, items):
                        self._map = grids.map_payload(self._cap, info, self._version, self.channel)
                    self._show_input()
                self._compare = self._compared(info)
                self._top = self._top_json(info)
        except Exception as err:  # noqa: BLE001 - shown in the widget, which stays usable
            self._report(err)
            if self.view == "filters":
                self.view = "maps"

    def _rank(self, info: capture.LayerInfo) -> None:
        """Compute the sort order the selection asks for (once per layer, image and score)."""
        if self.sort == "channel" or self._order(info) is not None:
            return
        scores, target = insight.channel_scores(self._model, self._x, info.name, self.sort, device=self._device)
        ranked = insight.rank(scores)
        self._ranking = {
            "layer": info.name, "version": self._version, "by": self.sort, "target": target,
            "label": self._label(target) if target is not None else None,
            "order": [c for c, _ in ranked], "scores": [float(s) for s in scores.tolist()],
        }
        with self._adjusting():  # the selected channel stays selected: show its page
            self.page = min(self._position(self.channel) // self.page_size, self._page_count(info) - 1)

    def _compared(self, info: capture.LayerInfo) -> dict:
        """The second image's data and the difference, for the current selection (compare)."""
        if self.compare < 0 or self.compare == self.image_index or self.view == "filters":
            return {}
        other, cap = self._gallery.capture(self.compare)
        self._images = self._images_json()  # its capture is kept now: the strip says so
        items = self._items(info, "maps") if self.view == "maps" else range(self.channel, self.channel + 1)
        key = [self._version, other, self.view, info.name, [items.start, items.stop] if isinstance(items, range) else list(items)]
        if self._compare.get("key") == key:
            return self._compare
        b_info = cap.info(info.name) if info.name in cap.names else None
        if b_info is None or b_info.out_shape != info.out_shape:
            raise ValueError(
                f"compare: image {self.compare} gives layer {info.name!r} "
                f"{'no map' if b_info is None else 'a map of shape ' + str(b_info.out_shape)}, image "
                f"{self.image_index} one of {info.out_shape}; compare images of one size."
            )
        diff = self._difference(info.name, other)
        if self.view == "maps":
            return {"key": key, "other": other, "maps": grids.maps_payload(cap, info, other, items),
                    "diff": insight.diff_payload(diff, info, self._version, other, "diff", items)}
        return {"key": key, "other": other, "map": grids.map_payload(cap, info, other, self.channel),
                "map_diff": insight.diff_payload(diff, info, self._version, other, "map_diff", items)}

    def _difference(self, layer: str, other: int):
        """The exact difference at ``layer``, kept for the last pair of images (one tensor)."""
        key = (layer, self._version, other)
        kept = getattr(self, "_diff_kept", None)
        if kept is None or kept[0] != key:
            x2 = self._gallery.items[self.compare].x
            self._diff_kept = (key, insight.difference(self._model, self._x, x2, layer, device=self._device))
        return self._diff_kept[1]

    def _top_json(self, info: capture.LayerInfo) -> dict:
        """The selected channel's top images of the last scan (side view), with thumbnails."""
        result = self._scan_result
        if self.view != "side" or result is None or info.name not in result.layers:
            return {}
        if self._top.get("layer") == info.name and self._top.get("channel") == self.channel and self._top.get("scan") == id(result):
            return self._top
        thumbs = self.__dict__.setdefault("_thumbs", OrderedDict())
        entries = []
        for entry in result.top(info.name, self.channel):
            key = (id(result), info.name, self.channel, entry.rank)
            if key not in thumbs:
                thumbs[key] = _thumbnail(result.patch(entry))
                while len(thumbs) > _THUMBS_KEPT:
                    thumbs.popitem(last=False)
            entries.append({"rank": entry.rank, "index": entry.index, "score": entry.score,
                            "box": list(entry.box), "source": str(entry.source), "thumb": thumbs[key]})
        return {"layer": info.name, "channel": self.channel, "scan": id(result), "items": entries,
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
        out = []
        strip = len(self._gallery) > 1  # one image shows no strip: no thumbnail to make
        for i, item in enumerate(self._gallery.items):
            if strip and item.thumb is None:
                item.thumb = self._gallery.thumbnail(i)
            out.append({"index": i, "label": item.label, "thumb": item.thumb or "", "version": self._gallery.version(i)})
        return out

    def _show_input(self) -> None:
        """Send the input picture (the side view and the attribution panels show it); encoded
        on first need, not in the constructor, which the first view does not use."""
        if not self._input_url:
            self._input_url = export.png_data_url(preprocess.display_image(self._x, self._transform))
        self._input_png = self._input_url

    @property
    def _x(self):
        return self._gallery.items[self.image_index].x

    def _n_classes(self) -> int:
        return int(attribution.class_scores(self._capture().output).numel())


def _thumbnail(img: Any, size: int = 96) -> str:
    img = img.copy()
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
