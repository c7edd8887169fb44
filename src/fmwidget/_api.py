"""The explorer's Python API: what a notebook calls, as thin calls into the engines.

A mixin of :class:`fmwidget.FeatureMapExplorer` (``_widget.py`` holds its traits and answers).
"""

from __future__ import annotations

import pathlib
import time
from dataclasses import dataclass
from typing import Any

import torch

from . import attribution, capture, checks, export, grids, insight, preprocess, rules
from . import scan as scan_engine


@dataclass(frozen=True)
class TopPatch:
    """One of a channel's top images from :meth:`FeatureMapExplorer.scan`.

    Attributes
    ----------
    index : int
        The image's index in the scanned source.
    score : float
        The channel's exact maximum over its map for that image.
    box : (int, int, int, int)
        ``(x0, y0, x1, y1)`` in model-input pixels: the region the strongest position sees
        (its receptive field, clipped to the input); ``x1``, ``y1`` exclusive.
    patch : PIL.Image.Image
        That region as the model saw it.
    position : (int, int)
        The strongest position ``(i, j)`` in the layer's map.
    source : str or int
        The file path for a folder source, otherwise the index.
    """

    index: int
    score: float
    box: tuple[int, int, int, int]
    patch: Any
    position: tuple[int, int]
    source: Any


class ExplorerAPI:
    """The public methods of :class:`fmwidget.FeatureMapExplorer`."""

    # ------------------------------------------------------------------ what it shows
    @property
    def layer_names(self) -> list[str]:
        """Offered layer names, as in ``model.named_modules()``, in forward-execution order."""
        return self._capture().names

    @property
    def input_tensor(self) -> torch.Tensor:
        """The (1, 3, H, W) float32 tensor the model was given for the current image (a copy)."""
        return self._x.clone()

    @property
    def model(self) -> torch.nn.Module:
        """The model being explored (the user's own object)."""
        return self._model

    @property
    def images(self) -> list:
        """The loaded images, in order: RGB ``PIL.Image`` s, or model-input tensors as given."""
        return [item.image for item in self._gallery.items]

    def add_image(self, img: Any, *, name: str | None = None) -> int:
        """Append an image (anything ``img`` accepts, with the same checks); return its index.

        The model runs on it when it is shown (``image_index``). On error nothing changes.

        Examples
        --------
        >>> i = w.add_image("dog.jpg")  # doctest: +SKIP
        >>> w.image_index = i           # doctest: +SKIP
        """
        self._capture()  # a closed explorer says so
        item = self._gallery.load(img, argname="img", name=name)
        index = self._gallery.add(item)
        with self.hold_sync():
            self._images = self._images_json()
            self._versions = self._versions_json()
        return index

    def set_image(self, img: Any) -> None:
        """Replace the current image by ``img``, run the model on it and refresh every view.

        On error nothing changes.
        """
        self._capture()
        old = self._gallery.items[self.image_index]
        item = self._gallery.load(img, index=self.image_index)
        cap = self._gallery.run(item.x)
        item.thumb = None if len(self._gallery) > 1 else old.thumb
        self._gallery.replace(self.image_index, item, cap, protect={self.compare})
        # the filters view reads the model's weights again too (they may have been trained since)
        self._weights_version += 1
        self._rankings.clear()
        self._switch(self.image_index)
        self._answer()

    # ------------------------------------------------------------------ exact values
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

    def difference(self, layer: str | None = None) -> torch.Tensor:
        """Exact (C, H, W) float32 difference at ``layer`` (default: the current one): the
        current image's activation minus that of image :attr:`compare`.

        Examples
        --------
        >>> w.compare = 1                  # doctest: +SKIP
        >>> w.difference("conv1").shape    # doctest: +SKIP
        torch.Size([64, 112, 112])
        """
        name = capture.resolve_layer(self.layer_names, layer or self.layer, argname="layer")
        if self.compare < 0:
            raise ValueError("difference: there is no second image; set compare to an image index first (w.compare = 1).")
        x2 = self._gallery.items[self.compare].x
        return insight.difference(self._model, self._x, x2, name, device=self._device)

    def rank_channels(self, layer: str | None = None, by: str = "mean", target: int | None = None) -> list[tuple[int, float]]:
        """Every channel of ``layer`` (default: the current one) with its score, best first.

        Scores come from the exact float32 activation of the current image: ``"mean"``
        (spatial mean), ``"max"`` (spatial max), ``"active"`` (the fraction of positions above
        zero) or ``"contribution"`` (the Grad-CAM weight for class ``target``, default the top
        class, times the spatial mean). Equal scores keep channel order.

        Examples
        --------
        >>> w.rank_channels("conv1", by="max")[:2]  # doctest: +SKIP
        [(17, 3.82), (5, 3.41)]
        """
        name = capture.resolve_layer(self.layer_names, layer or self.layer, argname="layer")
        if target is not None:
            target = checks.index_arg("target", target, self._n_classes(), "the model output (classes)")
        scores, _ = insight.channel_scores(self._model, self._x, name, by, target=target, device=self._device)
        return insight.rank(scores)

    # ------------------------------------------------------------------ attribution
    def guided_backprop(self, name: str, channel: int, position: Any = None) -> torch.Tensor:
        """Guided backpropagation of a channel to the input, (3, H, W): what in this image makes
        the channel fire (see :func:`fmwidget.attribution.guided_backprop` for the definition
        and ``position``: None, ``"max"`` or ``(i, j)``)."""
        name = capture.resolve_layer(self.layer_names, name, argname="name")
        count = self._capture().info(name).out_shape[0]
        checks.index_arg("channel", channel, count, f"layer {name!r}")
        if isinstance(position, list):  # a list works as a tuple does, and can be a cache key
            position = tuple(position)
        key = ("gbp", self._version, name, channel, position)
        if key not in self._attrib_cache:
            g = attribution.guided_backprop(self._model, self._x, name, channel, device=self._device, position=position)
            self._remember(key, g)
        return self._attrib_cache[key].clone()

    def grad_cam(self, name: str, target: int | None = None) -> torch.Tensor:
        """Grad-CAM of class ``target`` (default: top-1) at layer ``name``: (H, W) in [0, 1]."""
        name = capture.resolve_layer(self.layer_names, name, argname="name")
        if target is not None:  # the same check and message as for the browser's requests
            target = checks.index_arg("target", target, self._n_classes(), "the model output (classes)")
        key = ("cam", self._version, name, target)
        if key not in self._attrib_cache:
            cam, used = attribution.grad_cam(self._model, self._x, name, target, device=self._device)
            self._remember(key, cam)
            self._remember(("cam_target", self._version, name, target), used)  # the class explained
        return self._attrib_cache[key].clone()

    def predictions(self, k: int = 5) -> list[tuple[Any, float]]:
        """Top-``k`` (label or index, probability) pairs from the captured model output."""
        return attribution.predictions(self._capture().output, k=k, labels=self._labels)

    def _remember(self, key: tuple, value: Any) -> None:
        if len(self._attrib_cache) >= 32:  # attribution results kept for repeated requests
            self._attrib_cache.pop(next(iter(self._attrib_cache)))
        self._attrib_cache[key] = value

    # ------------------------------------------------------------------ many images
    def scan(self, source: Any, *, layers: Any = None, k: int = 9, batch_size: int = 16):
        """Find what fires each channel across many images: every channel's top ``k`` images.

        Runs the model over ``source`` in batches on its device, reducing each map to its
        per-channel maximum and position inside the hooks; only the top ``k`` per channel are
        kept. Progress shows in the widget (images done, images per second, a Stop button) and
        in Python. Stop, or a KeyboardInterrupt, ends it cleanly and keeps what was scanned.

        Parameters
        ----------
        source : folder, list of images, Dataset or iterable
            A folder (image files, searched recursively), a list of images, or a
            ``torch.utils.data.Dataset`` or iterable yielding images or ``(image, label)``.
        layers : list of str, optional
            The layers to scan (default: every offered layer).
        k : int
            Images kept per channel.
        batch_size : int
            Images per forward pass.

        Returns
        -------
        fmwidget.scan.ScanResult
            Also kept by the widget: :meth:`top_images` and the side view read it.
        """
        self._capture()
        names = self.layer_names if layers is None else [capture.resolve_layer(self.layer_names, n, argname="layers") for n in layers]
        self._stop_requested = False
        started = time.monotonic()

        def progress(done: int, total: int | None, rate: float) -> None:
            self._scan = {"running": True, "done": done, "total": total, "rate": rate,
                          "elapsed": time.monotonic() - started}
            print(f"\rscanned {done}{'/' + str(total) if total else ''} images, {rate:.1f} images/s", end="", flush=True)

        self._scan = {"running": True, "done": 0, "total": None, "rate": 0.0, "elapsed": 0.0}
        try:
            # The widget's Stop button interrupts the kernel (js/scanbar.js): the scan takes the
            # KeyboardInterrupt as a clean stop and returns what it has.
            result = scan_engine.scan(
                self._model, source, layers=names, k=k, batch_size=batch_size,
                transform=self._transform, device=self._device, progress=progress,
                should_stop=lambda: self._stop_requested,
            )
        except BaseException as err:
            self._scan = {"running": False, "done": self._scan.get("done", 0), "total": self._scan.get("total"),
                          "failed": f"{type(err).__name__}: {err}"[:300], "elapsed": time.monotonic() - started}
            raise
        print()
        self._scan_result = result
        self._scan_serial += 1
        self._scan = {"running": False, "done": result.n_images, "total": result.n_images, "stopped": result.stopped,
                      "reason": result.reason, "elapsed": time.monotonic() - started, "layers": list(result.layers)}
        self._answer()
        return result

    def top_images(self, layer: str, channel: int, k: int | None = None) -> list[TopPatch]:
        """The last :meth:`scan`'s best images for ``channel`` of ``layer``, best first, each
        with its score, the input region its strongest position sees, and that patch.

        ``k`` caps how many (default: all the scan kept, its ``k``)."""
        if self._scan_result is None:
            raise ValueError("top_images: nothing was scanned yet; call w.scan(source) first.")
        result = self._scan_result
        out = []
        for entry in result.top(layer, channel, k):
            out.append(TopPatch(entry.index, entry.score, entry.box, result.patch(entry), entry.position, entry.source))
        return out

    # ------------------------------------------------------------------ export
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
        if isinstance(width, bool) or not isinstance(width, int) or not 64 <= width <= 16384:
            raise ValueError(f"width must be an int from 64 to 16384 pixels, got {width!r}.")
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
            The page's title.
        """
        from ipywidgets.embed import dependency_state, embed_data

        target = export.check_path(path, (".html", ".htm"), "path")
        infos = self._capture().layers
        sizes = [grids.nbytes(info) for info in infos]
        names, note = export.pick_layers(self.layer_names, sizes, self.layer, layers)
        bundle = []
        for name in names:
            info = self._cap.info(name)
            bundle.append(grids.maps_payload(self._cap, info, self._version, range(info.out_shape[0])))
            if info.weight_shape:
                weight = capture.weight(self._model, name)
                bundle.append(grids.filters_payload(weight, info, self._weights_version, range(info.weight_shape[0]), bgr=self._bgr))
        self._show_input()  # the side view's overlay
        # drop_defaults=False keeps the class-level _esm and _css in the saved state.
        # state=: this widget and what it needs only, not every widget alive in the kernel
        embedded = embed_data(views=[self], drop_defaults=False, state=dependency_state([self], drop_defaults=False))
        return export.to_html(embedded, bundle, note, target, title=title or f"fmwidget: {self._model_label}")

    def _view_snapshot(self) -> dict:
        """What the current view shows, for :func:`fmwidget.export.save_png`."""
        info = self._info()
        norm, cmap = rules.resolve(self.view, self.norm, self.cmap)
        snap = {
            "model": self._model_label, "info": info, "view": self.view, "channel": self.channel,
            "norm": norm, "cmap": cmap, "page": self.page, "page_size": self.page_size, "in_page": self.in_page,
            "order": self._order(info) if self.view == "maps" else None,
            "ranking": self._ranking if self.view == "maps" and self._order(info) is not None else None,
            "labels": [item.label for item in self._gallery.items], "image_index": self.image_index,
            "compare": self.compare, "norm_choice": self.norm, "cmap_choice": self.cmap,
        }
        # whole blocks: the answer held in a trait when it is one, else built for the picture
        if self.view == "maps":
            whole = range(info.out_shape[0])
            held = self._holds(self._maps, self._version, info.name, whole)
            snap["maps"] = self._maps if held else grids.maps_payload(self._cap, info, self._version, whole)
        if info.weight_shape and self.view != "maps":
            whole = range(info.weight_shape[0])
            if self._holds(self._filters, self._weights_version, info.name, whole):
                snap["filters"] = self._filters
            else:
                weight = capture.weight(self._model, info.name)
                snap["filters"] = grids.filters_payload(weight, info, self._weights_version, whole, bgr=self._bgr)
        if self.view == "side":
            held = self._holds(self._map, self._version, info.name, range(self.channel, self.channel + 1))
            snap["map"] = self._map if held else grids.map_payload(self._cap, info, self._version, self.channel)
            snap["input"] = preprocess.display_image(self._x, self._transform)
        if self.compare >= 0 and self.compare != self.image_index and self.view != "filters":
            snap["compare_data"] = self._compare_snapshot(info)
        if self.view == "side" and self._scan_result is not None and info.name in self._scan_result.layers:
            try:
                snap["top"] = [(t.patch, t.score, t.index) for t in self.top_images(info.name, self.channel)]
                snap["scanned"] = self._scan_result.n_images
            except TypeError:  # a one-shot source (a generator) cannot be read again for patches
                pass
        return snap

    def _compare_snapshot(self, info: capture.LayerInfo) -> dict:
        """The second image's payload and the difference, whole, for save_png."""
        other, cap = self._gallery.capture(self.compare, protect={self.image_index})
        items = range(info.out_shape[0]) if self.view == "maps" else range(self.channel, self.channel + 1)
        held = self._compare.get("diff" if self.view == "maps" else "map_diff", {})
        if self._holds(held, self._version, info.name, items, other):
            return self._compare
        return self._compare_payloads(info, cap, other, items)

    def close(self) -> None:
        """Free the captured activations and close the comm."""
        self._closed = True
        getattr(self, "_attrib_cache", {}).clear()  # getattr: also for a constructor that failed
        if getattr(self, "_gallery", None) is not None:
            self._gallery.clear()
        self._scan_result = None
        self._cap = None
        for name in ("_diff_kept", "_input_url"):
            self.__dict__[name] = None
        for name in ("_thumbs", "_rankings"):
            if name in self.__dict__:
                self.__dict__[name].clear()
        super().close()
        # the comm is closed: these clear Python's copies of the payloads without sending them
        for name in ("_maps", "_filters", "_map", "_compare", "_attrib", "_top", "_ranking"):
            self.set_trait(name, {})
        for name in ("_images", "_versions"):
            self.set_trait(name, [])
        self.set_trait("_input_png", "")
