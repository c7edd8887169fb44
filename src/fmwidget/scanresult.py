"""What a scan found: every channel's top images, with boxes and patches (:class:`ScanResult`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from .capture import resolve_layer
from .preprocess import display_image
from .receptive import ReceptiveField, receptive_field
from .sources import Source, load_item, unpack_item

__all__ = ["ScanResult", "TopImage"]


@dataclass(frozen=True)
class TopImage:
    """One of a channel's top images.

    Attributes
    ----------
    layer : str
        The layer.
    channel : int
        The channel.
    rank : int
        0 for the best image.
    index : int
        Index of the image in the source (``ScanResult.sources[index]``).
    score : float
        The channel's maximum over the map for this image: the exact value of the output.
    position : (int, int)
        ``(i, j)``, row and column of that maximum in the layer's map (first one on ties).
    box : (int, int, int, int)
        ``(x0, y0, x1, y1)``: the input pixels that position sees (its receptive field),
        clipped to the model input; ``x1``, ``y1`` exclusive.
    source : str or int
        The file path for a folder source, otherwise the index.

    Examples
    --------
    >>> TopImage("conv1", 3, 0, 12, 4.5, (2, 5), (7, 1, 14, 8), 12).box[2:]
    (14, 8)
    """

    layer: str
    channel: int
    rank: int
    index: int
    score: float
    position: tuple[int, int]
    box: tuple[int, int, int, int]
    source: str | int


class ScanResult:
    """The top images of every channel of the scanned layers (see :func:`scan`).

    Attributes
    ----------
    layers : tuple of str
        The layers, in the order asked for.
    shapes : dict
        ``{layer: (C, H, W)}``, the output shape of one image (empty when nothing was scanned).
    input_size : (int, int) or None
        ``(height, width)`` of the model input.
    n_images : int
        Images scanned.
    k : int
        Images kept per channel (at most ``n_images`` are there).
    stopped : bool
        Whether the scan ended before the source did.
    reason : str or None
        ``"should_stop"`` or ``"KeyboardInterrupt"`` when stopped.
    sources : sequence
        What each index was: ``sources[i]`` is the file path for a folder source, otherwise
        ``i``.
    scores, indices, positions : dict of torch.Tensor
        Per layer, CPU tensors of shape ``(C, min(k, n_images))``, best first: the channel
        maxima (float32, or float64 for a float64 model), the source indices (int64) and the
        flat positions ``i * W + j`` (int64).
    transform : callable or None
        The preprocessing used (None: ``imagenet_transform()``).

    Notes
    -----
    Made by :func:`scan`. It holds references (not copies) to the model, to measure receptive
    fields on demand, and to an indexable source, to re-read images for :meth:`patch` and
    :meth:`image`; a one-shot iterable is not kept.

    Examples
    --------
    >>> import torchvision
    >>> from fmwidget.scan import scan
    >>> model = torchvision.models.resnet18(weights=None)
    >>> images = [torch.rand(3, 64, 64) for _ in range(5)]
    >>> res = scan(model, images, layers=["conv1", "layer1.0.conv2"], k=3)
    >>> res.n_images, tuple(res.scores["conv1"].shape)
    (5, (64, 3))
    >>> best = res.top("conv1", 0)[0]
    >>> res.patch(best).size == (best.box[2] - best.box[0], best.box[3] - best.box[1])
    True
    """

    def __init__(
        self,
        *,
        layers: Sequence[str],
        shapes: dict[str, tuple[int, int, int]],
        input_size: tuple[int, int] | None,
        n_images: int,
        k: int,
        stopped: bool,
        reason: str | None,
        sources: Sequence,
        scores: dict[str, torch.Tensor],
        indices: dict[str, torch.Tensor],
        positions: dict[str, torch.Tensor],
        transform: Callable | None = None,
        model: nn.Module | None = None,
        reader: Source | None = None,
    ) -> None:
        self.layers = tuple(layers)
        self.shapes = dict(shapes)
        self.input_size = input_size
        self.n_images = int(n_images)
        self.k = int(k)
        self.stopped = bool(stopped)
        self.reason = reason
        self.sources = sources
        self.scores = scores
        self.indices = indices
        self.positions = positions
        self.transform = transform
        # For receptive fields (measured lazily, once per layer) and patches (re-read lazily).
        self._model = model
        self._src = reader
        self._fields: dict[str, ReceptiveField] = {}

    def __repr__(self) -> str:
        state = f", stopped by {self.reason}" if self.stopped else ""
        return (
            f"ScanResult({self.n_images} images, {len(self.layers)} layers, top {self.k} per "
            f"channel{state})"
        )

    # -- queries -------------------------------------------------------------------------

    def _layer(self, layer: Any) -> str:
        name = resolve_layer(list(self.layers), layer, argname="layer")
        if self.n_images == 0:
            raise ValueError(
                f"layer {name!r}: the scan holds no images (it was stopped by {self.reason} "
                f"before the first batch finished); scan again and let it run longer."
            )
        return name

    def top(self, layer: str, channel: int, k: int | None = None) -> list[TopImage]:
        """The images where ``channel`` of ``layer`` fires most, best first.

        The first call for a layer measures its receptive field (for the boxes) with the model:
        forward and backward passes on a few random inputs (:mod:`fmwidget.receptive`),
        cached in this result.

        Parameters
        ----------
        layer : str
            One of :attr:`layers`.
        channel : int
            ``0 <= channel < C``.
        k : int, optional
            How many, at most :attr:`k` (default: all kept; fewer when fewer images were
            scanned).

        Returns
        -------
        list of TopImage

        Examples
        --------
        >>> import torchvision
        >>> from fmwidget.scan import scan
        >>> res = scan(torchvision.models.resnet18(weights=None),
        ...            [torch.rand(3, 64, 64) for _ in range(4)], layers=["conv1"], k=2)
        >>> [t.rank for t in res.top("conv1", 5)]
        [0, 1]
        """
        name = self._layer(layer)
        channels, height, width = self.shapes[name]
        if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)):
            raise TypeError(f"channel must be an int, got {type(channel).__name__} {channel!r}.")
        if not 0 <= channel < channels:
            raise ValueError(
                f"channel={channel} is out of range: layer {name!r} has {channels} channels; "
                f"pass 0 <= channel < {channels}."
            )
        kept = int(self.scores[name].shape[1])
        if k is None:
            k = kept
        elif isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"k must be an int or None, got {type(k).__name__} {k!r}.")
        elif not 1 <= k <= self.k:
            raise ValueError(
                f"k={k}: the scan kept the top {self.k} images per channel; pass 1 <= k <= "
                f"{self.k}, or scan again with scan(..., k={k}) for more."
            )
        channel, k = int(channel), min(int(k), kept)
        rf = self.receptive_field(name)
        scores = self.scores[name][channel, :k].tolist()
        indices = self.indices[name][channel, :k].tolist()
        flat = self.positions[name][channel, :k].tolist()
        out = []
        for rank, (score, index, pos) in enumerate(zip(scores, indices, flat)):
            i, j = divmod(int(pos), width)
            out.append(TopImage(name, channel, rank, int(index), float(score), (i, j),
                                rf.box(i, j), self.sources[index]))
        return out

    def receptive_field(self, layer: str) -> ReceptiveField:
        """The layer's :class:`~fmwidget.receptive.ReceptiveField` at the scan's input size,
        measured with the model on the first call and cached.

        Examples
        --------
        >>> import torchvision
        >>> from fmwidget.scan import scan
        >>> res = scan(torchvision.models.resnet18(weights=None), [torch.rand(3, 64, 64)],
        ...            layers=["maxpool"])
        >>> res.receptive_field("maxpool").size
        (11, 11)
        """
        name = self._layer(layer)
        if name not in self._fields:
            if self._model is None:
                raise ValueError(
                    f"layer {name!r}: this result has no model to measure receptive fields with."
                )
            self._fields[name] = receptive_field(self._model, name, self.input_size)
        return self._fields[name]

    def image(self, index: int) -> np.ndarray:
        """The ``(H, W, 3)`` uint8 picture the model saw for source item ``index``, re-read from
        the source and preprocessed again (the scan keeps no images): :meth:`input` inverted
        for display.

        Examples
        --------
        >>> import torchvision
        >>> from fmwidget.scan import scan
        >>> res = scan(torchvision.models.resnet18(weights=None), [torch.rand(3, 64, 64)],
        ...            layers=["conv1"])
        >>> res.image(0).shape
        (64, 64, 3)
        """
        return display_image(self.input(index), self.transform)

    def input(self, index: int) -> torch.Tensor:
        """The ``(1, 3, H, W)`` model input of source item ``index``, re-read from the source
        and preprocessed again, as the scan gave it to the model.

        Raises
        ------
        TypeError
            When the source was a one-shot iterable (a generator), which cannot be read again.

        Examples
        --------
        >>> import torchvision
        >>> from fmwidget.scan import scan
        >>> res = scan(torchvision.models.resnet18(weights=None), [torch.rand(3, 64, 64)],
        ...            layers=["conv1"])
        >>> tuple(res.input(0).shape)
        (1, 3, 64, 64)
        """
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(index).__name__} {index!r}.")
        if not 0 <= index < self.n_images:
            raise ValueError(
                f"index={index} is not a scanned image; pass 0 <= index < {self.n_images}."
            )
        if self._src is None or self._src.get is None:
            what = f"the {self._src.kind} (a one-shot iterable)" if self._src else "it"
            raise TypeError(
                f"source: {what} cannot be read again, so the picture of "
                f"image {index} is not available. Scan an indexable source (a folder, a list, a "
                f"Dataset with __getitem__ and __len__) to get pictures and patches, or keep the "
                f"images yourself and crop TopImage.box from them."
            )
        raw = unpack_item(self._src.get(int(index)), int(index))
        x = load_item(raw, int(index), self.transform, self._src, scanning=False)
        if tuple(x.shape[-2:]) != self.input_size:
            h, w = x.shape[-2:]
            raise ValueError(
                f"source[{index}] now gives a {h} x {w} input, but it was "
                f"{self.input_size[0]} x {self.input_size[1]} when scanned: the source changed "
                f"since. Scan it again."
            )
        return x

    def patch(self, entry: TopImage) -> Image.Image:
        """The part of the input that ``entry``'s position sees (``entry.box``), as the model
        saw it: the image is re-read, preprocessed, inverted for display and cropped.

        Parameters
        ----------
        entry : TopImage
            From :meth:`top`.

        Returns
        -------
        PIL.Image.Image
            RGB, ``(x1 - x0) x (y1 - y0)`` pixels.

        Examples
        --------
        >>> import torchvision
        >>> from fmwidget.scan import scan
        >>> res = scan(torchvision.models.resnet18(weights=None), [torch.rand(3, 64, 64)],
        ...            layers=["conv1"])
        >>> best = res.top("conv1", 0)[0]
        >>> x0, y0, x1, y1 = best.box                 # conv1 sees 7 x 7 pixels, fewer at a border
        >>> res.patch(best).size == (x1 - x0, y1 - y0) and max(x1 - x0, y1 - y0) <= 7
        True
        """
        if not isinstance(entry, TopImage):
            raise TypeError(
                f"entry must be a TopImage from ScanResult.top(), got {type(entry).__name__}."
            )
        x0, y0, x1, y1 = entry.box
        picture = self.image(entry.index)
        return Image.fromarray(np.ascontiguousarray(picture[y0:y1, x0:x1]))
