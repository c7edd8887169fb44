"""The FeatureMapExplorer widget: traits, validation, and the answers to the browser's selection.

The browser's selection (the public traits ``layer``, ``channel``, ``view``, ``page``,
``image_index``, ``compare``, ``sort`` and the rest) is the request; :meth:`_answer` sets the
data traits that selection needs, nothing more and nothing ahead. The browser keeps what it
received in a bounded cache and draws it; Python keeps no record of what it holds. The public
Python methods are in :mod:`fmwidget._api`.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import uuid
from typing import Any

import anywidget
from traitlets import Dict, Int, List, TraitError, Unicode, observe, validate

from . import _answers, capture, checks, gallery, grids, insight, models, rules
from ._answers import Answers
from ._api import ExplorerAPI
from ._messages import Messages

__all__ = ["FeatureMapExplorer"]

_STATIC = pathlib.Path(__file__).resolve().parent / "static"
_NOT_BUILT = """
export default { render({ el }) {
  el.textContent = "fmwidget: the front end is not built. From the repository run " +
    "`npm install && npm run build` (or reinstall with `pip install -e .`).";
} };
"""


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


class FeatureMapExplorer(ExplorerAPI, Answers, Messages, anywidget.AnyWidget):
    """Explore a CNN's filters and feature maps for one or more images, in a notebook widget.

    The model runs once per image with forward hooks; every offered layer's output is kept as
    uint8 codes with exact per-channel ranges. The browser asks for a layer by setting the
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
    img : image, or list of images
        A path, URL, PIL image, numpy array, bytes or tensor; a list of them (a strip of
        thumbnails in the widget, the first one shown). A (3, H, W) or (1, 3, H, W) float
        tensor is the model input as it is; anything else goes through ``transform``.
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
        ``cmap``, ``page_size``, ``sort``.

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
    image_index = Int(0, help="The image shown (an index into images).").tag(sync=True)
    compare = Int(-1, help="An image to compare with the shown one (an index into images), or -1.").tag(sync=True)
    sort = Unicode("channel", help=f"Order of the maps: one of {', '.join(map(repr, insight.RANKINGS))}.").tag(sync=True)

    _config = Dict().tag(sync=True)
    _layers = List(Dict()).tag(sync=True)
    _header = Dict().tag(sync=True)
    _images = List(Dict()).tag(sync=True)
    _versions = List().tag(sync=True)
    _maps = Dict().tag(sync=True)
    _filters = Dict().tag(sync=True)
    _map = Dict().tag(sync=True)
    _compare = Dict().tag(sync=True)
    _ranking = Dict().tag(sync=True)
    _input_png = Unicode("").tag(sync=True)
    _attrib = Dict().tag(sync=True)
    _scan = Dict().tag(sync=True)
    _top = Dict().tag(sync=True)
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
        allowed = {"layer", "channel", "view", "norm", "cmap", "page_size", "sort"}
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
        self._notes = list(resolved.notes)
        self._closed = False
        self._ready = False
        self._attrib_cache: dict = {}
        self._scan_result = None
        self._stop_requested = False
        self.__dict__.update(_answers.new_state())
        self._gallery = gallery.Gallery(self._model, self._transform, layers, device)
        many = isinstance(img, (list, tuple))
        if many and not img:
            raise ValueError("img: the list is empty; pass an image, or a list of at least one.")
        for i, one in enumerate(img if many else [img]):
            self._gallery.add(self._gallery.load(one, argname=f"img[{i}]" if many else "img"))
        self._version, self._cap = self._gallery.capture(0)
        try:
            # Everything, the first answer included, is in the traits before the comm opens, so
            # the browser gets it with the widget's first state.
            with self.hold_trait_notifications():
                # uid: the front end keeps one store per widget (js/store.js)
                self._config = {**rules.config(), "uid": uuid.uuid4().hex}
                self._show_capture()
                self.layer = kwargs.get("layer", self._cap.layers[0].name)
                for name in ("page_size", "view", "norm", "cmap", "channel", "sort"):
                    if name in kwargs:
                        setattr(self, name, kwargs[name])
            self.page = self.channel // self.page_size
            self._ready = True
            self._answer()
            if self._error:  # the first answer failed (e.g. view="filters" on a layer without)
                raise ValueError(self._error)
        except BaseException:
            self._gallery.clear()  # a bad argument: free the activations now, not at garbage collection
            raise
        super().__init__()
        self.on_msg(self._on_custom_msg)

    def __enter__(self) -> FeatureMapExplorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- state
    def _capture(self) -> capture.Capture:
        if self._closed or self._cap is None or not self._cap.layers:
            # A ValueError, as for a closed Python file: the object is in the wrong state.
            raise ValueError(
                "this FeatureMapExplorer is closed (its activations were freed); create a new "
                "one with FeatureMapExplorer(model, img)."
            )
        return self._cap

    def _info(self) -> capture.LayerInfo:
        return self._capture().info(self.layer)

    def _show_capture(self) -> None:
        """The traits that describe the current capture: header, layers, the image strip."""
        self._header = self._header_json()
        self._layers = [{**info.to_json(), **grids.layout(info)} for info in self._cap.layers]
        self._images = self._images_json()
        self._versions = self._versions_json()
        self._input_url = ""  # encoded when a view first needs it (_show_input)

    def _switch(self, index: int) -> None:
        """Show image ``index``: its capture (kept, or run now), then the answer."""
        version, cap = self._gallery.capture(index, protect={self.compare})
        self._version, self._cap = version, cap
        self._attrib_cache.clear()
        with self.hold_sync():
            self._show_capture()
            self._attrib = {}
            if self._input_png:
                self._show_input()
            if self.layer not in cap.names:
                self.layer = cap.names[0]

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

    @validate("sort")
    def _valid_sort(self, proposal: Any) -> str:
        return checks.choice("sort", proposal["value"], insight.RANKINGS)

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

    @validate("image_index")
    def _valid_image_index(self, proposal: Any) -> int:
        return checks.index("image_index", proposal["value"], len(self._gallery), "images")

    @validate("compare")
    def _valid_compare(self, proposal: Any) -> int:
        value = proposal["value"]
        if value == -1 and not isinstance(value, bool):
            return value
        checks.index("compare", value, len(self._gallery), "images (or -1 for none)")
        mine, theirs = self._x.shape, self._gallery.items[value].x.shape
        if mine != theirs:
            raise TraitError(
                f"compare={value}: image {value} is a {tuple(theirs[-2:])} input, image "
                f"{self.image_index} a {tuple(mine[-2:])} one; compare images the transform brings to one size."
            )
        return value

    def _page_count(self, info: capture.LayerInfo | None = None) -> int:
        info = info or self._info()
        count = info.out_shape[0]
        if self.view == "filters" and info.weight_shape:
            count = info.weight_shape[0]
        return max(1, -(-count // self.page_size))

    def _channel_page(self, info: capture.LayerInfo | None = None) -> int:
        """The page showing the selected channel in the shown order (within the page count)."""
        info = info or self._info()
        return min(self._position(self.channel) // self.page_size, self._page_count(info) - 1)

    # ---------------------------------------------------------------- reactions
    @observe("image_index")
    def _on_image(self, change: Any) -> None:
        if not self._ready:
            return
        try:
            self._switch(change["new"])
        except Exception as err:  # noqa: BLE001 - e.g. the model fails on it: said in the widget
            with self._adjusting():
                self.image_index = change["old"]
            self._report(err)
            return
        self._answer()

    @observe("layer", "page_size", "view")
    def _on_layer(self, change: Any) -> None:
        """Keep channel and pages valid for the new layer or paging, then answer."""
        if not self._ready:
            return
        with self._adjusting():
            info = self._info()
            if self.channel >= info.out_shape[0]:
                self.channel = 0
            self.page = self._channel_page(info)
            if change["name"] == "layer":
                self.in_page = 0
        self._answer()

    @observe("channel")
    def _on_channel(self, change: Any) -> None:
        if not self._ready:
            return
        with self._adjusting():
            page = self._position(self.channel) // self.page_size
            if page < self._page_count():
                self.page = page
        self._answer()

    @observe("page", "in_page", "compare", "sort")
    def _on_page(self, change: Any) -> None:
        if change["name"] == "sort" and self._ready and self.sort == "channel":
            with self._adjusting():  # back in channel order: the selected channel's page
                self.page = self._channel_page()
        self._answer()

    @contextlib.contextmanager
    def _adjusting(self):
        """Derived changes made inside do not answer on their own."""
        ready, self._ready = self._ready, False
        try:
            yield
        finally:
            self._ready = ready


def _check_labels(labels: Any) -> list[str]:
    if not isinstance(labels, (list, tuple)) or not all(isinstance(x, str) for x in labels):
        raise TypeError("labels must be a list of class names (str), one per model output.")
    return list(labels)
