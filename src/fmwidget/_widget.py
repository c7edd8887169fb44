"""The FeatureMapExplorer widget: traits, validation, message handling, orchestration."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pathlib
import threading
import weakref
from collections import OrderedDict
from typing import Any

import anywidget
import torch
from traitlets import Dict, Int, List, TraitError, Unicode, observe, validate

from . import attribution, capture, export, models, preprocess, tiles, views
from ._cache import PictureCache

__all__ = ["FeatureMapExplorer"]

_STATIC = pathlib.Path(__file__).resolve().parent / "static"
_NOT_BUILT = """
export default { render({ el }) {
  el.textContent = "fmwidget: the front end is not built. From the repository run " +
    "`npm install && npm run build` (or reinstall with `pip install -e .`).";
} };
"""

VIEWS = ("maps", "filters", "side")
NORMS = ("auto", "channel", "layer", "symmetric")
CMAPS = ("auto", "gray", "viridis", "bwr")
PAGE_SIZES = (16, 32, 64, 128, 256)
# Set from the browser in this order, so that a channel is checked against the new layer.
_BROWSER_KEYS = ("layer", "view", "norm", "cmap", "page_size", "channel", "page", "in_page")
_MESSAGES = ("guided_backprop", "grad_cam", "predictions", "clear_error", "hello", "resend_grid")
# Grid pictures the browser is assumed to still hold (it keeps the last 8 it received, see
# js/pictures.js): a picture sent ahead, or with an earlier update, is not sent again.
_BROWSER_KEEPS = 6


def _show(value: Any, limit: int = 60) -> str:
    """A short repr for messages: a hostile browser may send megabyte strings or huge ints."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        text = f"{'-' if value < 0 else ''}<{value.bit_length()}-bit int>"  # str() may refuse it
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _clip(message: str, limit: int = 500) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


def _choice(name: str, value: Any, options: tuple) -> Any:
    if value not in options or isinstance(value, bool):
        raise TraitError(f"{name}={_show(value)} is not allowed; choose one of {', '.join(map(repr, options))}.")
    return value


def _index(name: str, value: Any, count: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TraitError(f"{name} must be an int, got {type(value).__name__} {_show(value)}.")
    if not 0 <= value < count:
        raise TraitError(f"{name}={_show(value)} is out of range: {what} has {count}, so use 0 to {count - 1}.")
    return value


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

    The model runs once with forward hooks; every offered layer's output is kept in compact
    form. The browser gets the current view's picture and, once a page shows the widget, the
    one the next slider move will most likely show (docs/design.md, "Pictures sent ahead").

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
    view = Unicode("maps", help="'maps', 'filters' or 'side'.").tag(sync=True)
    norm = Unicode("auto", help="'auto', 'channel', 'layer' or 'symmetric'.").tag(sync=True)
    cmap = Unicode("auto", help="'auto', 'gray', 'viridis' or 'bwr'.").tag(sync=True)
    page = Int(0, help="Page of output channels.").tag(sync=True)
    page_size = Int(64, help="Channels per page: 16, 32, 64, 128 or 256.").tag(sync=True)
    in_page = Int(0, help="Page of input channels in the filters view.").tag(sync=True)

    _layers = List(Dict()).tag(sync=True)
    _header = Dict().tag(sync=True)
    _input_png = Unicode("").tag(sync=True)
    _grid = Unicode("").tag(sync=True)
    _grid_id = Unicode("").tag(sync=True)
    _grid_meta = Dict().tag(sync=True)
    _side = Dict().tag(sync=True)
    _attrib = Dict().tag(sync=True)
    _status = Unicode("loading").tag(sync=True)
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
        # Caffe-style inputs (the bundled SqueezeNet) are B, G, R: the filters' colour column
        # must flip them back.
        self._bgr = bool(getattr(self._transform, "bgr", False))
        self._layer_spec = layers
        self._closed = False
        self._version = 0
        self._ready = False
        self._cache = PictureCache()
        self._attrib_cache: dict = {}
        self._cap = None
        # Ids of the grid pictures the browser holds (see _show_grid and _send_ahead); the lock
        # because the prefetch worker sends pictures ahead too.
        self._sent: OrderedDict[str, None] = OrderedDict()
        self._sent_lock = threading.Lock()
        self._holding_grid = False
        self._direction = 1
        self._ahead: views.GridKey | None = None  # the picture to send ahead (_prefetch_neighbours)
        self._page_ready = False  # a page has built the model and said hello
        wanted = {"channel": 0, "view": "maps", "norm": "auto", "cmap": "auto", "page_size": self.page_size, **kwargs}
        early = self._early_picture(
            wanted["view"], kwargs.get("layer"), wanted["channel"], wanted["page_size"], wanted["norm"], wanted["cmap"],
            from_channel=True,
        )
        self._load(img, early)
        initial = {"layer": self._cap.layers[0].name, **wanted}
        try:
            # Everything, the first picture included, is in the traits before the comm opens, so
            # the browser gets it with the widget's first state and displays it at once.
            with self.hold_trait_notifications():
                self._header = self._header_json(resolved.notes)
                self._layers = [info.to_json() for info in self._cap.layers]
                for name in ("layer", "page_size", "view", "norm", "cmap", "channel"):
                    if name in initial:
                        setattr(self, name, initial[name])
            self.page = self.channel // self.page_size
            self._ready = True
            self._refresh(prefetch=False)
            super().__init__()
        except BaseException:
            # A bad argument: free the capture now (its compaction waits, paused, in a shared
            # thread), not whenever the garbage collector gets to this half-built widget.
            self._cap.clear()
            raise
        self._cap.resume()
        self.on_msg(self._on_custom_msg)
        # Only now, with the first picture built and the comm open, so that it does not compete
        # with them on a small machine.
        self._prefetch_neighbours()

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

        The views use a compact 8-bit copy; this re-runs the model up to ``name`` (hooks
        removed, mode restored) so the values are the module's true output.
        """
        name = capture.resolve_layer(self.layer_names, name, argname="name")
        return capture.exact_activation(self._model, self._x, name, device=self._device)

    def filters(self, name: str) -> torch.Tensor:
        """The conv weight of layer ``name``: (C_out, C_in/groups, kH, kW), float32, CPU copy."""
        name = capture.resolve_layer(self.layer_names, name, argname="name")
        weight = self._weight(name)
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
        """Save the current view as the user sees it (title, pictures, legend) as a PNG file."""
        return export.save_png(self, path, width=width)

    def to_html(self, path: Any, *, title: str | None = None) -> pathlib.Path:
        """Write a standalone HTML file of the widget in its current state; it opens offline."""
        return export.to_html(self, path, title=title)

    def set_image(self, img: Any) -> None:
        """Run the model on a new image and refresh every view. On error nothing changes."""
        self._load(img, self._early_picture(
            self.view, self.layer, self.page, self.page_size, self.norm, self.cmap, in_page=self.in_page
        ))
        with self.hold_sync():
            if self._input_png:  # a view shows it already: the new one at once
                self._show_input()
            self._attrib = {}
            if self.layer not in self.layer_names:
                self.layer = self.layer_names[0]
            self._refresh(prefetch=False)
        self._cap.resume()  # the same order as in __init__: picture, compaction, prefetch
        self._prefetch_neighbours()

    def guided_backprop(self, name: str, channel: int) -> torch.Tensor:
        """Guided backpropagation of ``activation(name)[channel].sum()`` to the input: (3, H, W)."""
        name = capture.resolve_layer(self.layer_names, name, argname="name")
        count = self._capture().info(name).out_shape[0]
        _index_arg("channel", channel, count, f"layer {name!r}")
        key = ("gbp", self._version, name, channel)
        if key not in self._attrib_cache:
            self._remember(key, attribution.guided_backprop(self._model, self._x, name, channel, device=self._device))
        return self._attrib_cache[key].clone()

    def grad_cam(self, name: str, target: int | None = None) -> torch.Tensor:
        """Grad-CAM of class ``target`` (default: top-1) at layer ``name``: (H, W) in [0, 1]."""
        name = capture.resolve_layer(self.layer_names, name, argname="name")
        if target is not None:  # the same check and message as for the browser's requests
            target = _index_arg("target", target, self._n_classes(), "the model output (classes)")
        key = ("cam", self._version, name, target)
        if key not in self._attrib_cache:
            cam, _ = attribution.grad_cam(self._model, self._x, name, target, device=self._device)
            self._remember(key, cam)
        return self._attrib_cache[key].clone()

    def predictions(self, k: int = 5) -> list[tuple[Any, float]]:
        """Top-``k`` (label or index, probability) pairs from the captured model output."""
        return attribution.predictions(self._capture().output, k=k, labels=self._labels)

    def close(self) -> None:
        """Free the captured activations and cached pictures, stop prefetching, close the comm."""
        # getattr: ipywidgets calls close() from __del__, also for a constructor that failed.
        # Under the lock: a picture being sent ahead from the prefetch thread finishes first.
        with getattr(self, "_sent_lock", contextlib.nullcontext()):
            self._closed = True
        cache = getattr(self, "_cache", None)
        if cache is not None:
            cache.close()
        getattr(self, "_attrib_cache", {}).clear()
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

    def _load(self, img: Any, early: capture.Early | None = None) -> None:
        if getattr(self, "_closed", False):
            self._capture()  # raises the "closed" error
        x = preprocess.model_input(img, self._transform)
        display = functools.cache(functools.partial(preprocess.display_image, x, self._transform))
        # defer: the first picture is built before the background compaction competes with it
        cap = capture.capture(self._model, x, self._layer_spec, device=self._device, defer=True, early=early)
        # Only replace state once everything succeeded: a failure leaves the widget as it was.
        self._x, self._cap, self._display = x, cap, display
        self._input_url = ""  # encoded when a view first needs it (_show_input)
        self._version += 1
        self._cache.clear()
        self._attrib_cache.clear()
        if early is not None:
            self._adopt(early)

    def _early_picture(
        self, view: Any, layer: Any, where: Any, page_size: Any, norm: Any, cmap: Any, *,
        in_page: Any = 0, from_channel: bool = False,
    ) -> capture.Early | None:
        """The next capture's first picture, built beside its forward pass (:class:`capture.Early`):
        a feature-maps page, the one view that waits for the forward pass. ``where`` is the
        page, or with ``from_channel`` the channel whose page it is. None where the arguments
        are not all valid: the traits' own checks report those once the capture is done, with
        their own messages (so nothing here may raise, whatever the types)."""
        if not all(type(v) is int for v in (where, page_size, in_page)) or where < 0:
            return None
        if not all(isinstance(v, str) for v in (view, norm, cmap)) or not (layer is None or isinstance(layer, str)):
            return None
        if view != "maps" or page_size not in PAGE_SIZES:
            return None
        page = where // page_size if from_channel else where
        norm, cmap = views.resolve_style("maps", norm, cmap)
        version = self._version + 1  # the one _load gives the new capture
        ref = weakref.ref(self)  # the capture's job must not keep a widget whose constructor failed

        def build(one: capture.Capture) -> tuple[views.GridKey, tiles.Picture]:
            key = views.GridKey(version, "maps", one.names[0], page, page_size, in_page, norm, cmap)
            owner = ref()
            if owner is None:
                raise RuntimeError("the widget was garbage-collected before its first picture")
            return key, owner._build(key, one)

        return capture.Early(build, layer)

    def _adopt(self, early: capture.Early) -> None:
        """Cache the picture ``early`` built; it is used if its key is the one asked for."""
        if early.result.cancel():  # never started: the layer is compacted when it is read
            return
        try:
            key, pic = early.result.result()
        except Exception:  # noqa: BLE001 - built again when asked for, which reports the error
            return
        self._cache.put(key, pic, _picture_size(pic))

    def _show_input(self) -> None:
        """Send the input picture (the side view and the attribution panel show it). It is
        PNG-encoded on first need, not in the constructor: ~2 ms and ~100 KB that the first
        view (the feature maps) does not use."""
        if not self._input_url:
            self._input_url = tiles.encode_rgb(self._display())
        self._input_png = self._input_url

    def _remember(self, key: tuple, value: Any) -> None:
        if len(self._attrib_cache) >= 32:
            self._attrib_cache.pop(next(iter(self._attrib_cache)))
        self._attrib_cache[key] = value

    def _weight(self, name: str) -> torch.Tensor | None:
        if not self._capture().info(name).weight_shape:
            return None
        module = dict(self._model.named_modules())[name]
        return module.weight.detach().to(device="cpu", dtype=torch.float32)

    def _header_json(self, notes: list[str]) -> dict:
        h, w = self._x.shape[-2:]
        return {
            "model": self._model_label,
            "input_size": [int(h), int(w)],
            "device": str(capture.model_device(self._model)),
            "notes": list(notes),
        }

    def _info(self) -> capture.LayerInfo:
        return self._capture().info(self.layer)

    def _key(self, layer: str | None = None) -> views.GridKey:
        norm, cmap = views.resolve_style(self.view, self.norm, self.cmap)
        return views.GridKey(
            self._version, self.view, layer or self.layer, self.page, self.page_size, self.in_page, norm, cmap
        )

    def _build(self, key: views.GridKey, cap: capture.Capture | None = None) -> tiles.Picture:
        """The grid picture for ``key``, from ``cap`` (default: the widget's capture)."""
        # Only the filters view reads the weight (finding the module walks the whole model).
        weight = self._weight(key.layer) if key.view == "filters" else None
        pic = views.grid_picture(self._cap if cap is None else cap, weight, key, bgr=self._bgr)
        pic.meta["picture"] = _picture_id(key)
        return pic

    def _grid_for(self, key: views.GridKey) -> tiles.Picture:
        return self._cache.get(key, functools.partial(self._build, key), _picture_size)

    def _refresh(self, *, prefetch: bool = True) -> None:
        """Compute what the current view shows and send it in one message."""
        if not self._ready:
            return
        try:
            with self.hold_sync():
                if self.view == "side":
                    self._show_input()
                    norm, cmap = views.resolve_style("side", self.norm, self.cmap)
                    self._side = views.side_payload(
                        self._cap, self._weight(self.layer), self.layer, self.channel, norm, cmap,
                        bgr=self._bgr,
                    )
                else:
                    if self.view == "filters" and not self._info().weight_shape:
                        raise ValueError(
                            f"layer {self.layer!r} ({self._info().type}) has no filters; showing its "
                            f"feature maps instead."
                        )
                    self._show_grid(self._grid_for(self._key()))
                self._status = "ready"
        except Exception as err:  # noqa: BLE001 - shown in the widget, which stays usable
            self._report(err)
            if self.view == "filters":
                self.view = "maps"
            return
        if prefetch:
            self._prefetch_neighbours()

    def _show_grid(self, pic: tiles.Picture) -> None:
        """Make ``pic`` the current grid; its pixels go to the browser only if it lacks them.

        A picture the browser already holds (sent ahead by :meth:`_send_ahead`, or shown
        before) is not sent again: only ``_grid_meta`` goes, naming it by ``picture`` id, and
        the browser shows its copy. ``_grid`` and ``_grid_id`` still change here in Python
        (export, tests and a newly opened page read them).
        """
        pid = pic.meta["picture"]
        with self._sent_lock:
            held = pid in self._sent
            self._remember_sent(pid)
        self._holding_grid = held
        try:
            self._grid, self._grid_id = pic.url, pid
        finally:
            self._holding_grid = False
        self._grid_meta = pic.meta

    def _should_send_property(self, key: str, value: Any) -> bool:
        if self._holding_grid and key in ("_grid", "_grid_id"):
            if self._holding_sync:
                self._states_to_send.discard(key)
            return False
        return super()._should_send_property(key, value)

    def _remember_sent(self, pid: str) -> None:
        self._sent[pid] = None
        self._sent.move_to_end(pid)
        while len(self._sent) > _BROWSER_KEEPS:
            self._sent.popitem(last=False)

    def _neighbour_key(self, j: int) -> views.GridKey | None:
        """The key of the picture a move to layer ``j`` will show, None if there is none."""
        if not 0 <= j < len(self._cap.layers):
            return None
        info = self._cap.layers[j]
        if self.view == "side" or (self.view == "filters" and not info.weight_shape):
            return None
        _, page = self._landing(info)
        return views.GridKey(**{**self._key(info.name).__dict__, "page": page, "in_page": 0})

    def _landing(self, info: capture.LayerInfo) -> tuple[int, int]:
        """The channel and page a move to layer ``info`` shows: the same channel if it exists
        there, else 0, and its page (the input-channel page goes back to 0)."""
        channel = self.channel if self.channel < info.out_shape[0] else 0
        return channel, min(channel // self.page_size, self._page_count(info) - 1)

    def _ahead_key(self) -> views.GridKey | None:
        """The neighbour the next move most likely shows: onward in the last move's direction."""
        i = self.layer_names.index(self.layer)
        return self._neighbour_key(i + self._direction) or self._neighbour_key(i - self._direction)

    def _prefetch_neighbours(self) -> None:
        # The picture to send ahead, kept for _send_ahead: the prefetch thread compares with it
        # rather than read traits that the main thread may be changing.
        self._ahead = None
        if self.view == "side":
            return
        i = self.layer_names.index(self.layer)
        ahead = self._ahead = self._ahead_key()
        keys = [ahead] if ahead else []
        for j in (i + 1, i - 1, i + 2):
            key = self._neighbour_key(j)
            if key is not None and key not in keys:
                keys.append(key)
        self._cache.prefetch(keys, _weak_builder(self), _picture_size)
        if ahead is not None:
            self._cache.when_ready(ahead, _weak_sender(self))

    def _send_ahead(self, key: views.GridKey, pic: tiles.Picture) -> None:
        """Send the likely next picture before it is asked for, so that the browser shows it
        at once when the slider moves (then the kernel's answer carries only its id). At most
        one picture ahead, and none that the browser holds: sequential moves cost one
        picture each, as without it."""
        pid = pic.meta["picture"]
        with self._sent_lock:  # held while sending, so _show_grid never counts on a picture in transit
            if self._closed or not self._page_ready or key != self._ahead:
                return  # closed, no page yet, or the user moved on: another picture is next
            if pid in self._sent:
                return
            self._remember_sent(pid)
            self.send({"type": "picture", "id": pid, "url": pic.url, "meta": pic.meta})

    def _report(self, err: BaseException) -> None:
        self._error = _clip(f"{type(err).__name__}: {err}", 2000)
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
        return _index("channel", proposal["value"], info.out_shape[0], f"layer {info.name!r} ({info.out_shape[0]} channels)")

    @validate("view")
    def _valid_view(self, proposal: Any) -> str:
        return _choice("view", proposal["value"], VIEWS)

    @validate("norm")
    def _valid_norm(self, proposal: Any) -> str:
        return _choice("norm", proposal["value"], NORMS)

    @validate("cmap")
    def _valid_cmap(self, proposal: Any) -> str:
        return _choice("cmap", proposal["value"], CMAPS)

    @validate("page_size")
    def _valid_page_size(self, proposal: Any) -> int:
        return _choice("page_size", proposal["value"], PAGE_SIZES)

    @validate("page")
    def _valid_page(self, proposal: Any) -> int:
        if not self.layer:
            return proposal["value"]
        return _index("page", proposal["value"], self._page_count(), "this layer's view")

    @validate("in_page")
    def _valid_in_page(self, proposal: Any) -> int:
        if not self.layer:
            return proposal["value"]
        count = views.n_pages(views.filter_cols(self._info()), views.IN_PAGE)
        return _index("in_page", proposal["value"], count, "this layer's input channels (pages)")

    def _page_count(self, info: capture.LayerInfo | None = None) -> int:
        info = info or self._info()
        count = views.filter_rows(info) if self.view == "filters" else info.out_shape[0]
        return views.n_pages(max(count, 1), self.page_size)

    # ---------------------------------------------------------------- reactions
    @observe("layer", "page_size", "view")
    def _on_layer(self, change: Any) -> None:
        """Keep channel and pages valid for the new layer or paging, then redraw."""
        if not self._ready:
            return
        with self._adjusting():
            self.channel, self.page = self._landing(self._info())
            if change["name"] == "layer":
                self.in_page = 0
                names = self.layer_names
                if change["old"] in names:
                    self._direction = 1 if names.index(change["new"]) >= names.index(change["old"]) else -1
        self._refresh()

    @observe("channel")
    def _on_channel(self, change: Any) -> None:
        if not self._ready:
            return
        with self._adjusting():
            page = self.channel // self.page_size
            if page < self._page_count():
                self.page = page
        self._refresh()

    @observe("page", "in_page", "norm", "cmap")
    def _on_style(self, change: Any) -> None:
        if self._ready:
            self._refresh()

    @contextlib.contextmanager
    def _adjusting(self):
        """Derived changes made inside do not trigger their own redraws."""
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
            self._error = f"refused a browser update that is not an object: {type(sync_data).__name__}"
            return
        refused, reasons = [], []
        for key in sync_data:
            if key not in _BROWSER_KEYS and key in self.keys:
                refused.append(key)
                reasons.append(f"the browser may not set {key!r}")
            elif key not in _BROWSER_KEYS:
                reasons.append(f"unknown field {str(key)[:40]!r} ignored")
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
                reasons.append(_clip(str(err)))
        if reasons:
            self._error = "Refused from the browser: " + "; ".join(reasons)
        elif self._error and self._error.startswith("Refused"):
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
            if kind in ("hello", "resend_grid"):
                self._on_front_end(kind)
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

    def _on_front_end(self, kind: str) -> None:
        """``hello``: a page has just built this widget's model from the full state, so it
        holds the current picture and nothing else. ``resend_grid``: a view lacks the picture
        that ``_grid_meta`` names (e.g. a page that joined later)."""
        with self._sent_lock:
            if kind == "hello":
                self._sent.clear()
                self._page_ready = True
            if self._grid_id:
                self._remember_sent(self._grid_id)
        if kind == "resend_grid":
            self.send_state(["_grid", "_grid_id", "_grid_meta"])
        elif self._ahead is not None:
            self._cache.when_ready(self._ahead, _weak_sender(self))

    def _attribution(self, kind: str, content: dict) -> dict:
        if kind == "predictions":
            return {"predictions": [
                {"index": i, "label": str(lab), "prob": p}
                for i, (lab, p) in zip(self._top_indices(5), self.predictions(5))
            ]}
        if kind == "guided_backprop":
            g = self.guided_backprop(self.layer, self.channel)
            url = tiles.encode_rgb(attribution.normalize_for_display(g))
            return {"gbp": {"layer": self.layer, "channel": self.channel, "url": url}}
        target = content.get("target")
        cam = self.grad_cam(self.layer, target)  # checks target, with the same message
        used = target if target is not None else self._top_indices(1)[0]
        pic = tiles.render_single(cam, norm="layer", cmap="viridis", vmin=0.0, vmax=1.0)
        label = self._labels[used] if self._labels and used < len(self._labels) else str(used)
        return {"cam": {"layer": self.layer, "target": used, "label": label, "url": pic.url}}

    def _top_indices(self, k: int) -> list[int]:
        scores = attribution.class_scores(self._capture().output)
        return [int(i) for i in torch.topk(scores, min(k, scores.numel())).indices]

    def _n_classes(self) -> int:
        return int(attribution.class_scores(self._capture().output).numel())


def _index_arg(name: str, value: Any, count: int, what: str) -> int:
    try:
        return _index(name, value, count, what)
    except TraitError as err:
        raise (TypeError if "must be an int" in str(err) else ValueError)(str(err)) from None


def _check_labels(labels: Any) -> list[str]:
    if not isinstance(labels, (list, tuple)) or not all(isinstance(x, str) for x in labels):
        raise TypeError("labels must be a list of class names (str), one per model output.")
    return list(labels)


def _weak_builder(widget: "FeatureMapExplorer"):
    """A prefetch job that does not keep a dropped widget (and its model) alive while queued."""
    ref = weakref.ref(widget)

    def build(key: views.GridKey) -> tiles.Picture:
        owner = ref()
        if owner is None:
            raise RuntimeError("the widget was garbage-collected before its prefetch ran")
        return owner._build(key)

    return build


def _weak_sender(widget: "FeatureMapExplorer"):
    """The callback that sends a prefetched picture ahead, without keeping the widget alive."""
    ref = weakref.ref(widget)

    def send(key: views.GridKey, pic: tiles.Picture) -> None:
        owner = ref()
        if owner is None:
            return
        try:
            owner._send_ahead(key, pic)
        except Exception:  # noqa: BLE001 - a lost ahead picture only costs a round trip later
            pass

    return send


def _picture_id(key: views.GridKey) -> str:
    """A short id naming one grid picture (all of its key, the capture's version included)."""
    return hashlib.blake2b(repr(key).encode(), digest_size=8).hexdigest()


def _picture_size(pic: tiles.Picture) -> int:
    return len(pic.url)
