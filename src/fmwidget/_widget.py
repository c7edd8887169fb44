"""The FeatureMapExplorer widget: traits, validation, and the answers to the browser's selection.

The browser's selection (the public traits ``layer``, ``channel``, ``view``, ``page`` and the
rest) is the request; :meth:`FeatureMapExplorer._answer` sets the data traits that selection
needs (``_maps``, ``_filters``, ``_map``), nothing more and nothing ahead. The browser keeps
what it received in a bounded cache and draws it; Python keeps no record of what it holds.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import uuid
from typing import Any

import anywidget
import torch
from traitlets import Dict, Int, List, TraitError, Unicode, observe, validate

from . import attribution, capture, checks, export, grids, models, preprocess, rules

__all__ = ["FeatureMapExplorer"]

_STATIC = pathlib.Path(__file__).resolve().parent / "static"
_NOT_BUILT = """
export default { render({ el }) {
  el.textContent = "fmwidget: the front end is not built. From the repository run " +
    "`npm install && npm run build` (or reinstall with `pip install -e .`).";
} };
"""
# Set from the browser in this order, so that a channel is checked against the new layer.
_BROWSER_KEYS = ("layer", "view", "norm", "cmap", "page_size", "channel", "page", "in_page")
_MESSAGES = ("guided_backprop", "grad_cam", "predictions", "clear_error")
_ATTRIB_KEEP = 32  # attribution results kept for repeated requests (each ~ an input's size)


def _asset(name: str, missing: str) -> Any:
    """The built front-end file's text; its path only for anywidget's hot reload (ANYWIDGET_HMR=1).

    For a path anywidget connects every new instance to the file's change signal with a strong
    reference, so no widget (nor its model and activations) could ever be garbage collected
    (manzt/anywidget#929). The text is read once, at import.
    """
    path = _STATIC / name
    if not path.is_file():
        return missing
    return path if os.environ.get("ANYWIDGET_HMR") == "1" else path.read_text(encoding="utf-8")


class FeatureMapExplorer(anywidget.AnyWidget):
    """Explore a CNN's filters and feature maps for one image, in a notebook widget.

    The model runs once with forward hooks; every offered layer's output is kept as uint8
    codes with exact per-channel ranges. The browser asks for a layer by setting the
    selection traits; the answer is that layer's codes (docs/design.md), which the browser
    colours, caches and draws itself, so colormap, normalisation, paging and channel changes
    need no round trip to Python.

    Parameters
    ----------
    model : torch.nn.Module or str
        Any module with 2-D convolutions (it is never moved, copied or left changed), or a
        torchvision model name loaded with its default pretrained weights, or ``"squeezenet"``
        for the bundled ImageNet-trained SqueezeNet 1.0 (works offline), or what
        :func:`fmwidget.demo_model` returns.
    img : path, URL, PIL image, numpy array, bytes or torch.Tensor
        The image. A (3, H, W) or (1, 3, H, W) float tensor is the model input as it is;
        anything else goes through ``transform``.
    layers : None, "all" or list of str, optional
        None: every ``nn.Conv2d``; "all": every module with a 4-D output; or module names.
    transform : callable, optional
        PIL image -> (3, H, W) tensor. Default: the weights' own transforms for a named model,
        else resize 256 / centre-crop 224 / ImageNet mean and std (:func:`imagenet_transform`).
    device : torch.device or str, optional
        Where the input goes; it must match the model's device (the model is never moved).
    labels : list of str, optional
        Class names for :meth:`predictions` (torchvision weights' categories by default).
    **kwargs
        Initial values of the public traits: ``layer``, ``channel``, ``view``, ``norm``,
        ``cmap``, ``page_size``.

    Examples
    --------
    >>> import torchvision
    >>> from fmwidget import FeatureMapExplorer, sample_image
    >>> w = FeatureMapExplorer(torchvision.models.resnet18(weights=None), sample_image())
    >>> w.layer_names[:2]
    ['conv1', 'layer1.0.conv1']
    >>> w.activation("conv1").shape
    torch.Size([64, 112, 112])
    """

    _esm = _asset("widget.js", _NOT_BUILT)
    _css = _asset("widget.css", "")

    layer = Unicode("", help="The current layer's name (one of layer_names).").tag(sync=True)
    channel = Int(0, help="The selected channel of the current layer.").tag(sync=True)
    view = Unicode("maps", help=f"One of {', '.join(map(repr, rules.VIEWS))}.").tag(sync=True)
    norm = Unicode("auto", help=f"One of {', '.join(map(repr, rules.NORMS))}.").tag(sync=True)
    cmap = Unicode("auto", help=f"One of {', '.join(map(repr, rules.CMAPS))}.").tag(sync=True)
    page = Int(0, help="Page of output channels (maps and filters views).").tag(sync=True)
    page_size = Int(64, help=f"Channels per page: one of {rules.PAGE_SIZES}.").tag(sync=True)
    in_page = Int(0, help=f"Page of input channels in the filters view ({rules.IN_PAGE} each).").tag(sync=True)

    _config = Dict().tag(sync=True)
    _layers = List(Dict()).tag(sync=True)
    _header = Dict().tag(sync=True)
    _maps = Dict().tag(sync=True)
    _filters = Dict().tag(sync=True)
    _map = Dict().tag(sync=True)
    _input_png = Unicode("").tag(sync=True)
    _attrib = Dict().tag(sync=True)
    _status = Unicode("ready").tag(sync=True)
    _error = Unicode("").tag(sync=True)

    def __init__(
        self,
        model: Any,
        img: Any,
        *,
        layers: Any = None,
        transform: Any = None,
        device: Any = None,
        labels: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        allowed = {"layer", "channel", "view", "norm", "cmap", "page_size"}
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            raise TypeError(
                f"FeatureMapExplorer() got unexpected keyword argument(s) {', '.join(unknown)}; "
                f"accepted: layers, transform, device, labels, {', '.join(sorted(allowed))}."
            )
        resolved = models.resolve_model(model, device=device)
        self._model = resolved.module
        self._model_label = resolved.name
        self._transform = transform if transform is not None else resolved.transform
        self._labels = _check_labels(labels) if labels is not None else resolved.labels
        self._device = device
        # Caffe-style inputs (the bundled SqueezeNet) are B, G, R: a first layer's colour
        # composite must flip them back.
        self._bgr = bool(getattr(self._transform, "bgr", False))
        self._layer_spec = layers
        self._notes = list(resolved.notes)
        self._closed = False
        self._ready = False
        self._version = 0
        self._cap: capture.Capture | None = None
        self._attrib_cache: dict = {}
        self._load(img)
        try:
            # Everything, the first answer included, is in the traits before the comm opens, so
            # the browser gets it with the widget's first state.
            with self.hold_trait_notifications():
                # uid: the front end keeps one store per widget (js/store.js)
                self._config = {**rules.config(), "uid": uuid.uuid4().hex}
                self._header = self._header_json()
                self._layers = [{**info.to_json(), **grids.layout(info)} for info in self._cap.layers]
                self.layer = kwargs.get("layer", self._cap.layers[0].name)
                for name in ("page_size", "view", "norm", "cmap", "channel"):
                    if name in kwargs:
                        setattr(self, name, kwargs[name])
            self.page = self.channel // self.page_size
            self._ready = True
            self._answer()
        except BaseException:
            self._cap.clear()  # a bad argument: free the activations now, not at garbage collection
            raise
        super().__init__()
        self.on_msg(self._on_custom_msg)

    # ---------------------------------------------------------------- public API
    @property
    def layer_names(self) -> list[str]:
        """Offered layer names, as in ``model.named_modules()``, in forward-execution order."""
        return self._capture().names

    @property
    def input_tensor(self) -> torch.Tensor:
        """The (1, 3, H, W) float32 tensor the model was given (a copy)."""
        return self._x.clone()

    @property
    def model(self) -> torch.nn.Module:
        """The model being explored (the user's own object)."""
        return self._model

    def activation(self, name: str) -> torch.Tensor:
        """Exact float32 output (C, H, W) on the CPU of layer ``name`` for :attr:`input_tensor`.

        The views use uint8 codes; this re-runs the model up to ``name`` (hooks removed, mode
        restored) so the values are the module's true output.
        """
        name = capture.resolve_layer(self.layer_names, name, argname="name")
        return capture.exact_activation(self._model, self._x, name, device=self._device)

    def filters(self, name: str) -> torch.Tensor:
        """The conv weight of layer ``name``: (C_out, C_in/groups, kH, kW), float32, CPU copy."""
        name = capture.resolve_layer(self.layer_names, name, argname="name")
        weight = capture.weight(self._model, name)
        if weight is None:
            convs = [i.name for i in self._capture().layers if i.weight_shape][:5]
            raise ValueError(
                f"name={name!r} ({self._capture().info(name).type}) has no convolution weight; "
                f"filters exist for nn.Conv2d layers such as {convs}."
            )
        return weight.clone()

    def to_numpy(self, name: str | None = None):
        """Exact activations (C, H, W) of ``name`` (default: the current layer) as a numpy array."""
        return self.activation(name or self.layer).numpy()

    def save_png(self, path: Any, *, width: int = 900) -> pathlib.Path:
        """Save the current view as the user sees it, with a title, panel titles and legends.

        Parameters
        ----------
        path : str or pathlib.Path
            A ``.png`` file in an existing folder.
        width : int
            The width the grids are laid out for, in pixels (as the widget does for its own
            width; the picture adds margins).
        """
        target = export.check_path(path, (".png",), "path")
        if isinstance(width, bool) or not isinstance(width, int) or width < 64:
            raise ValueError(f"width must be an int of at least 64 pixels, got {width!r}.")
        return export.save_png(self._view_snapshot(), target, width=width)

    def to_html(self, path: Any, *, layers: Any = None, title: str | None = None) -> pathlib.Path:
        """Write a standalone HTML file of the widget that works offline, with no kernel.

        The layers' grids are in the file, so the slider, views, channels, pages, colormaps and
        normalisation all work there; controls that need Python (guided backprop, Grad-CAM)
        are disabled with a note.

        Parameters
        ----------
        path : str or pathlib.Path
            An ``.html`` file in an existing folder.
        layers : None or list of str
            The layers to include; None: all of them up to
            :data:`fmwidget.export.HTML_CAP_BYTES` of codes, else the current layer and its
            neighbours (the page says so).
        title : str, optional
            The page title.
        """
        from ipywidgets.embed import embed_data

        target = export.check_path(path, (".html", ".htm"), "path")
        infos = self._capture().layers
        sizes = [grids.nbytes(info) for info in infos]
        names, note = export.pick_layers(self.layer_names, sizes, self.layer, layers)
        bundle = []
        for name in names:
            info = self._cap.info(name)
            bundle.append(grids.maps_payload(self._cap, info, self._version, 0, 1 << 30, whole=True))
            if info.weight_shape:
                weight = capture.weight(self._model, name)
                bundle.append(grids.filters_payload(weight, info, self._version, 0, 1 << 30, bgr=self._bgr, whole=True))
        self._show_input()  # the side view's overlay
        # drop_defaults=False keeps the class-level _esm and _css in the saved state.
        embedded = embed_data(views=[self], drop_defaults=False)
        return export.to_html(embedded, bundle, note, target, title=title or f"fmwidget: {self._model_label}")

    def set_image(self, img: Any) -> None:
        """Run the model on a new image and refresh every view. On error nothing changes."""
        self._load(img)
        with self.hold_sync():
            self._header = self._header_json()
            self._layers = [{**info.to_json(), **grids.layout(info)} for info in self._cap.layers]
            if self.layer not in self.layer_names:
                self.layer = self.layer_names[0]
            self._attrib = {}
            if self._input_png:  # a view shows it already: the new one at once
                self._show_input()
            self._answer()

    def guided_backprop(self, name: str, channel: int, **kwargs: Any) -> torch.Tensor:
        """Guided backpropagation of a channel to the input, (3, H, W): see
        :func:`fmwidget.attribution.guided_backprop` for the definition and options."""
        name = capture.resolve_layer(self.layer_names, name, argname="name")
        count = self._capture().info(name).out_shape[0]
        checks.index_arg("channel", channel, count, f"layer {name!r}")
        key = ("gbp", self._version, name, channel, tuple(sorted(kwargs.items())))
        if key not in self._attrib_cache:
            g = attribution.guided_backprop(self._model, self._x, name, channel, device=self._device, **kwargs)
            self._remember(key, g)
        return self._attrib_cache[key].clone()

    def grad_cam(self, name: str, target: int | None = None) -> torch.Tensor:
        """Grad-CAM of class ``target`` (default: top-1) at layer ``name``: (H, W) in [0, 1]."""
        name = capture.resolve_layer(self.layer_names, name, argname="name")
        if target is not None:  # the same check and message as for the browser's requests
            target = checks.index_arg("target", target, self._n_classes(), "the model output (classes)")
        key = ("cam", self._version, name, target)
        if key not in self._attrib_cache:
            cam, _ = attribution.grad_cam(self._model, self._x, name, target, device=self._device)
            self._remember(key, cam)
        return self._attrib_cache[key].clone()

    def predictions(self, k: int = 5) -> list[tuple[Any, float]]:
        """Top-``k`` (label or index, probability) pairs from the captured model output."""
        return attribution.predictions(self._capture().output, k=k, labels=self._labels)

    def close(self) -> None:
        """Free the captured activations and close the comm."""
        self._closed = True
        getattr(self, "_attrib_cache", {}).clear()  # getattr: also for a constructor that failed
        if getattr(self, "_cap", None) is not None:
            self._cap.clear()
        super().close()

    def __enter__(self) -> "FeatureMapExplorer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---------------------------------------------------------------- engine
    def _capture(self) -> capture.Capture:
        if self._cap is None or not self._cap.layers or getattr(self, "_closed", False):
            # A ValueError, as for a closed Python file: the object is in the wrong state.
            raise ValueError(
                "this FeatureMapExplorer is closed (its activations were freed); create a new "
                "one with FeatureMapExplorer(model, img)."
            )
        return self._cap

    def _load(self, img: Any) -> None:
        if getattr(self, "_closed", False):
            self._capture()  # raises the "closed" error
        x = preprocess.model_input(img, self._transform)
        cap = capture.capture(self._model, x, self._layer_spec, device=self._device)
        # Only replace state once everything succeeded: a failure leaves the widget as it was.
        self._x, self._cap = x, cap
        self._input_url = ""  # encoded when a view first needs it (_show_input)
        self._version += 1
        self._attrib_cache.clear()

    def _show_input(self) -> None:
        """Send the input picture (the side view and the attribution panels show it); encoded
        on first need, not in the constructor, which the first view does not use."""
        if not self._input_url:
            self._input_url = export.png_data_url(preprocess.display_image(self._x, self._transform))
        self._input_png = self._input_url

    def _remember(self, key: tuple, value: Any) -> None:
        if len(self._attrib_cache) >= _ATTRIB_KEEP:
            self._attrib_cache.pop(next(iter(self._attrib_cache)))
        self._attrib_cache[key] = value

    def _header_json(self) -> dict:
        h, w = self._x.shape[-2:]
        header = {
            "model": self._model_label,
            "input_size": [int(h), int(w)],
            "device": str(capture.model_device(self._model)),
            "notes": list(self._notes),
            "predictions": [],
            "predictions_note": "",
        }
        try:
            top = attribution.top_classes(self._capture().output, 5)
        except (TypeError, ValueError):
            header["predictions_note"] = "The model's output is not a vector of class scores, so there are no predictions."
            return header
        names = self._labels if self._labels and len(self._labels) == self._n_classes() else None
        header["predictions"] = [{"index": i, "label": names[i] if names else f"class {i}", "prob": p} for i, p in top]
        if names is None:
            header["predictions_note"] = (
                "No class names: pass labels=[...] (one name per model output, in order) to "
                "FeatureMapExplorer to name them."
            )
        return header

    def _info(self) -> capture.LayerInfo:
        return self._capture().info(self.layer)

    def _answer(self) -> None:
        """Set the data traits the current selection needs; an unchanged one is not rebuilt."""
        if not self._ready:
            return
        info = self._info()
        try:
            with self.hold_sync():
                if self.view == "maps":
                    self._maps = self._built(self._maps, "maps", info)
                else:
                    if self.view == "filters" and not info.weight_shape:
                        raise ValueError(f"layer {info.name!r} ({info.type}) has no filters; showing its feature maps instead.")
                    if info.weight_shape:
                        self._filters = self._built(self._filters, "filters", info)
                if self.view == "side":
                    self._map = self._built(self._map, "map", info)
                    self._show_input()
        except Exception as err:  # noqa: BLE001 - shown in the widget, which stays usable
            self._report(err)
            if self.view == "filters":
                self.view = "maps"

    def _built(self, current: dict, kind: str, info: capture.LayerInfo) -> dict:
        """The payload of ``kind`` for the selection: ``current`` if it is that one already."""
        lay = grids.layout(info)
        if kind == "map":
            first, count = self.channel, 1
        else:
            total = info.out_shape[0] if kind == "maps" else info.weight_shape[0]
            items = grids.block(total, lay[f"{kind}_whole"], self.page, self.page_size)
            first, count = items.start, items.stop - items.start
        if (current.get("version"), current.get("layer"), current.get("first"), (current.get("shape") or [0])[0]) == (
            self._version, info.name, first, count,
        ):
            return current
        if kind == "maps":
            return grids.maps_payload(self._cap, info, self._version, self.page, self.page_size)
        if kind == "map":
            return grids.map_payload(self._cap, info, self._version, self.channel)
        weight = capture.weight(self._model, info.name)
        return grids.filters_payload(weight, info, self._version, self.page, self.page_size, bgr=self._bgr)

    def _view_snapshot(self) -> dict:
        """What the current view shows, for :func:`fmwidget.export.save_png`."""
        info = self._info()
        norm, cmap = rules.resolve(self.view, self.norm, self.cmap)
        snap = {
            "model": self._model_label, "info": info, "view": self.view, "channel": self.channel,
            "norm": norm, "cmap": cmap, "page": self.page, "page_size": self.page_size, "in_page": self.in_page,
        }
        if self.view == "maps":
            snap["maps"] = grids.maps_payload(self._cap, info, self._version, self.page, self.page_size)
        if info.weight_shape and self.view != "maps":
            snap["filters"] = grids.filters_payload(
                capture.weight(self._model, info.name), info, self._version, self.page, self.page_size, bgr=self._bgr
            )
        if self.view == "side":
            snap["map"] = grids.map_payload(self._cap, info, self._version, self.channel)
            snap["input"] = preprocess.display_image(self._x, self._transform)
        return snap

    def _report(self, err: BaseException) -> None:
        self._error = checks.clip(f"{type(err).__name__}: {err}", 2000)
        self._status = "ready"

    # ---------------------------------------------------------------- validation
    @validate("layer")
    def _valid_layer(self, proposal: Any) -> str:
        try:
            return capture.resolve_layer(self.layer_names, proposal["value"], argname="layer")
        except (TypeError, ValueError) as err:
            raise TraitError(str(err)) from None

    @validate("channel")
    def _valid_channel(self, proposal: Any) -> int:
        if not self.layer:
            return proposal["value"]
        info = self._info()
        count = info.out_shape[0]
        return checks.index("channel", proposal["value"], count, f"layer {info.name!r} ({count} channels)")

    @validate("view")
    def _valid_view(self, proposal: Any) -> str:
        return checks.choice("view", proposal["value"], rules.VIEWS)

    @validate("norm")
    def _valid_norm(self, proposal: Any) -> str:
        return checks.choice("norm", proposal["value"], rules.NORMS)

    @validate("cmap")
    def _valid_cmap(self, proposal: Any) -> str:
        return checks.choice("cmap", proposal["value"], rules.CMAPS)

    @validate("page_size")
    def _valid_page_size(self, proposal: Any) -> int:
        return checks.choice("page_size", proposal["value"], rules.PAGE_SIZES)

    @validate("page")
    def _valid_page(self, proposal: Any) -> int:
        if not self.layer:
            return proposal["value"]
        return checks.index("page", proposal["value"], self._page_count(), "this layer's view (pages)")

    @validate("in_page")
    def _valid_in_page(self, proposal: Any) -> int:
        if not self.layer:
            return proposal["value"]
        inputs = (self._info().weight_shape or (0, 0))[1]
        count = max(1, -(-inputs // rules.IN_PAGE))
        return checks.index("in_page", proposal["value"], count, "this layer's input channels (pages)")

    def _page_count(self, info: capture.LayerInfo | None = None) -> int:
        info = info or self._info()
        count = info.out_shape[0]
        if self.view == "filters" and info.weight_shape:
            count = info.weight_shape[0]
        return max(1, -(-count // self.page_size))

    # ---------------------------------------------------------------- reactions
    @observe("layer", "page_size", "view")
    def _on_layer(self, change: Any) -> None:
        """Keep channel and pages valid for the new layer or paging, then answer."""
        if not self._ready:
            return
        with self._adjusting():
            info = self._info()
            if self.channel >= info.out_shape[0]:
                self.channel = 0
            self.page = min(self.channel // self.page_size, self._page_count(info) - 1)
            if change["name"] == "layer":
                self.in_page = 0
        self._answer()

    @observe("channel")
    def _on_channel(self, change: Any) -> None:
        if not self._ready:
            return
        with self._adjusting():
            page = self.channel // self.page_size
            if page < self._page_count():
                self.page = page
        self._answer()

    @observe("page", "in_page")
    def _on_page(self, change: Any) -> None:
        self._answer()

    @contextlib.contextmanager
    def _adjusting(self):
        """Derived changes made inside do not answer on their own."""
        self._ready = False
        try:
            yield
        finally:
            self._ready = True

    # ---------------------------------------------------------------- browser messages
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
            if key not in _BROWSER_KEYS and key in self.keys:
                refused.append(key)
                reasons.append(f"the browser may not set {key!r}")
            elif key not in _BROWSER_KEYS:
                reasons.append(f"unknown field {str(key)[:40]!r} ignored")
        with self.hold_sync():
            for key in _BROWSER_KEYS:
                if key not in sync_data:
                    continue
                try:
                    value = sync_data[key]
                    # traitlets skips validation inside hold_trait_notifications (as set_state uses)
                    # for a value equal to the current one: False == 0 would be stored as a bool.
                    if isinstance(value, bool) and isinstance(self.traits()[key], Int):
                        raise TraitError(f"{key} must be an int, got bool {value!r}.")
                    super().set_state({key: value})
                except (TraitError, TypeError, ValueError) as err:
                    refused.append(key)
                    reasons.append(checks.clip(str(err)))
            if reasons:
                self._error = "Refused from the browser: " + "; ".join(reasons)
            elif self._error.startswith("Refused"):
                self._error = ""
        if refused:
            self.send_state(key=refused)

    def _on_custom_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        try:
            if not isinstance(content, dict) or content.get("type") not in _MESSAGES:
                kind = content.get("type") if isinstance(content, dict) else type(content).__name__
                raise ValueError(f"unknown message {str(kind)[:40]!r}; expected one of {', '.join(_MESSAGES)}")
            kind = content["type"]
            if kind == "clear_error":
                self._error = ""
                return
            self._status = "busy"
            with self.hold_sync():
                result = self._attribution(kind, content)
                self._show_input()
                self._attrib = {**self._attrib, **result}
                self._status = "ready"
        except Exception as err:  # noqa: BLE001 - every failure is shown in the widget
            with self.hold_sync():
                self._report(err)

    def _attribution(self, kind: str, content: dict) -> dict:
        if kind == "predictions":
            return {"predictions": [
                {"index": i, "label": str(lab), "prob": p}
                for i, (lab, p) in zip(self._top_indices(5), self.predictions(5))
            ], "labelled": bool(self._labels)}
        if kind == "guided_backprop":
            g = self.guided_backprop(self.layer, self.channel)
            return {"gbp": grids.gbp_payload(g, self.layer, self._version, self.channel)}
        target = content.get("target")
        cam = self.grad_cam(self.layer, target)  # checks target, with the same message
        used = target if target is not None else self._top_indices(1)[0]
        label = self._labels[used] if self._labels and used < len(self._labels) else str(used)
        return {"cam": grids.cam_payload(cam, self.layer, self._version, used, label)}

    def _top_indices(self, k: int) -> list[int]:
        scores = attribution.class_scores(self._capture().output)
        return [int(i) for i in torch.topk(scores, min(k, scores.numel())).indices]

    def _n_classes(self) -> int:
        return int(attribution.class_scores(self._capture().output).numel())


def _check_labels(labels: Any) -> list[str]:
    if not isinstance(labels, (list, tuple)) or not all(isinstance(x, str) for x in labels):
        raise TypeError("labels must be a list of class names (str), one per model output.")
    return list(labels)
