"""What the browser sends: selection updates (validated field by field) and messages.

A mixin of :class:`fmwidget.FeatureMapExplorer`. A refused field or message changes nothing,
sends the current values back (so the page shows the truth again) and says why in ``_error``.
"""

from __future__ import annotations

import pathlib
from typing import Any

from traitlets import Int, TraitError

from . import checks, grids, loading

# Set from the browser in this order: the image first (its capture has the layers), then the
# layer, so that a channel is checked against the new layer.
BROWSER_KEYS = ("image_index", "layer", "view", "norm", "cmap", "sort", "page_size", "channel", "page", "in_page", "compare")
MESSAGES = ("guided_backprop", "grad_cam", "clear_error", "add_image", "stop_scan", "open_top")


class Messages:
    """Handling the browser's updates and messages (mixed into the widget)."""

    def set_state(self, sync_data: Any) -> None:
        """Apply a state update from the browser, refusing invalid fields one by one.

        Refused fields leave the Python state unchanged, are sent back with their current
        values (so the browser shows the truth again), and explain themselves in ``_error``.
        """
        if not isinstance(sync_data, dict):
            self._error = f"Refused a browser update that is not an object: {type(sync_data).__name__}"
            return
        refused, reasons = [], []
        for key in sync_data:
            if key not in BROWSER_KEYS and key in self.keys:
                refused.append(key)
                reasons.append(f"the browser may not set {key!r}")
            elif key not in BROWSER_KEYS:
                reasons.append(f"unknown field {str(key)[:40]!r} ignored")
        before = self._error
        with self.hold_sync():
            # Each field is applied (and checked) on its own, with its derived changes; the
            # answer is built once, for the whole update.
            self._batching = True
            try:
                for key in BROWSER_KEYS:
                    if key not in sync_data:
                        continue
                    try:
                        value = sync_data[key]
                        # traitlets skips validation inside hold_trait_notifications (as set_state
                        # uses) for a value equal to the current one: False == 0 would stay a bool.
                        if isinstance(value, bool) and isinstance(self.traits()[key], Int):
                            raise TraitError(f"{key} must be an int, got bool {value!r}.")
                        super().set_state({key: value})
                    except (TraitError, TypeError, ValueError) as err:
                        refused.append(key)
                        reasons.append(checks.clip(str(err)))
            finally:
                self._batching = False
            self._answer()
            if reasons:
                # an answer's own error in this update (e.g. why the view went back) stays said
                answered = self._error if self._error != before and not self._error.startswith("Refused") else ""
                self._error = "Refused from the browser: " + "; ".join(reasons) + (f". Also: {answered}" if answered else "")
            elif self._error.startswith("Refused"):
                self._error = ""
        if refused:
            self.send_state(key=refused)

    def _on_custom_msg(self, _widget: Any, content: Any, buffers: Any) -> None:
        try:
            if not isinstance(content, dict) or content.get("type") not in MESSAGES:
                kind = content.get("type") if isinstance(content, dict) else type(content).__name__
                raise ValueError(f"unknown message {str(kind)[:40]!r}; expected one of {', '.join(MESSAGES)}")
            kind = content["type"]
            if kind == "clear_error":
                self._error = ""
            elif kind == "stop_scan":
                self._stop_requested = True
            elif kind == "add_image":
                self._dropped(content, buffers)
            elif kind == "open_top":
                self._open_top(content)
            else:
                self._status = "busy"
                with self.hold_sync():
                    result = self._attribution(kind, content)
                    self._show_input()
                    self._attrib = {**self._attrib, **result}
                    self._status = "ready"
        except Exception as err:  # noqa: BLE001 - every failure is shown in the widget
            with self.hold_sync():
                self._report(err)

    def _dropped(self, content: dict, buffers: Any) -> None:
        """A file dropped, pasted or picked in the widget: checked as ``img`` is, then shown."""
        name = content.get("name")
        name = str(name)[:200] if isinstance(name, str) and name else "the dropped file"
        if not buffers or len(buffers) != 1:
            raise ValueError(f"{name}: the browser sent {len(buffers or [])} files' bytes; drop one image at a time.")
        data = bytes(buffers[0])
        if len(data) > loading.MAX_DOWNLOAD_BYTES:
            raise ValueError(
                f"{name} is {len(data) / 2**20:.0f} MB, over the {loading.MAX_DOWNLOAD_BYTES >> 20} MB limit for "
                f"an image; use a smaller file (or pass it from Python with add_image)."
            )
        # checked as img is; the messages name the file ("dropped file 'x.png': the data ...")
        self._open_new(self._gallery.load(data, argname=f"dropped file {name!r}", name=name), name)

    def _open_new(self, item: Any, name: str) -> None:
        """Add ``item`` and show it, once the model ran on it; on failure nothing changes."""
        index = self._gallery.add(item)
        try:
            self._gallery.capture(index, protect={self.image_index, self.compare})
        except Exception as err:
            self._gallery.remove_last()
            raise type(err)(f"{name}: {err}") from err
        with self.hold_sync():
            self._images = self._images_json()
            self.image_index = index

    def _open_top(self, content: dict) -> None:
        """A click on one of the side view's top images: add that image and show it."""
        rank = content.get("rank")
        items = self._top.get("items") or []
        checks.index_arg("rank", rank, len(items), "the strip of top images")
        result = self._scan_result
        entry = result.top(self._top["layer"], self._top["channel"])[rank]
        x = result.input(entry.index)  # the model input as scanned: used as it is
        label = pathlib.PurePath(entry.source).name if isinstance(entry.source, str) else f"scanned #{entry.index}"
        self._open_new(self._gallery.load(x, name=label), label)

    def _attribution(self, kind: str, content: dict) -> dict:
        if kind == "guided_backprop":
            g = self.guided_backprop(self.layer, self.channel)
            return {"gbp": grids.gbp_payload(g, self.layer, self._version, self.channel)}
        target = content.get("target")
        cam = self.grad_cam(self.layer, target)  # checks target, with the same message
        used = self._attrib_cache[("cam_target", self._version, self.layer, target)]
        return {"cam": grids.cam_payload(cam, self.layer, self._version, used, self._label(used))}
