"""What makes a channel fire, across many images: a scan for every channel's top images.

:func:`scan` runs a model over many images (a folder, a list, a ``Dataset`` or any iterable)
in batches and keeps, for every channel of the chosen layers, the ``k`` images where the
channel's spatial maximum is highest, with the position of that maximum. Forward hooks reduce
each output map to its maximum and position on the model's device; after each forward pass one
merge (a ``topk`` over every channel of every layer at once, stacked) updates the running
``(C, k)`` tables. Nothing that grows with the number of images is kept except the index of
sources (``ScanResult.sources``). The forward pass stops after the last chosen layer.

:class:`ScanResult` answers :meth:`~ScanResult.top` (a channel's best images, with the box of
the input each maximum sees) and :meth:`~ScanResult.patch` (that box, re-read from the source).

Semantics
---------
Stopping
    ``should_stop()`` is checked before each batch; when it returns True the scan ends and the
    result holds every batch scanned so far (``stopped=True``, ``reason="should_stop"``). A
    ``KeyboardInterrupt`` anywhere in the scan loop (reading images, the forward pass, the
    hooks, the merge, the ``progress`` or ``should_stop`` callbacks) is *not* re-raised: the
    scan ends the same way with ``reason="KeyboardInterrupt"``. A batch counts once its merge
    is committed (one assignment, so an interrupt never leaves half a batch in the result); the
    batch being read or run when the interrupt came is dropped, so at most ``batch_size``
    images of work are lost. In every case the model is left exactly as it was: mode,
    ``requires_grad`` flags, no hooks (:func:`fmwidget.modelstate.model_state`).
Bad items
    An item that cannot be read or preprocessed (a corrupt file, a dict or a bare label from a
    dataset, an input of another size than the first) raises at once: a ``TypeError``,
    ``ValueError`` or ``OSError`` whose message names ``source[i]`` (and the file), what was
    wrong and how to fix it. Nothing is returned and nothing is skipped silently: remove or fix
    the file. The model is left untouched.
Ties and NaN
    Equal maxima keep the earlier image first (a stable merge). A map with a NaN scores
    ``-inf``, so broken outputs rank last.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .capture import ModelError, check_device, model_state, resolve_layer
from .modelstate import model_dtype
from .scanresult import ScanResult, TopImage
from .sources import IMAGE_EXTENSIONS, load_item, open_source, unpack_item

__all__ = ["IMAGE_EXTENSIONS", "ScanResult", "TopImage", "scan"]


# --------------------------------------------------------------------------------------------
# the reduction
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Top:
    """The running top k of every channel of every layer, the layers' channels stacked
    (``ΣC`` rows): ``(ΣC, <=k)`` tensors on the model's device, best first."""

    scores: torch.Tensor
    indices: torch.Tensor
    positions: torch.Tensor


# Rows at least this long get their argmax from numpy (SIMD, 2-4x faster than torch's
# max(dim) per value on the CPU); shorter rows from torch, whose per-row cost is lower.
_NUMPY_ROW = 128


def _argmax_rows(rows: torch.Tensor) -> torch.Tensor:
    """First position of the maximum of every row of a (M, L) tensor."""
    if rows.device.type == "cpu" and rows.shape[1] >= _NUMPY_ROW and rows.dtype in (
        torch.float32, torch.float64
    ):
        return torch.from_numpy(rows.numpy().argmax(axis=1))
    return rows.max(dim=1).indices  # the first maximum, as documented for torch.max


def _best(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Column indices of the ``k`` highest scores of every row, best first, earlier columns
    first among equal scores (a stable order)."""
    k = min(k, scores.shape[1])
    if scores.device.type == "cpu":
        # topk is about 1.6x faster than a stable sort of these short rows, but its order of
        # equal values is unspecified: rows with a tie among their best k + 1 (a dead ReLU
        # channel's zeros, -inf for NaN) are sorted again, stably.
        extra = min(k + 1, scores.shape[1])
        values, order = torch.topk(scores, extra, dim=1)
        equal = values[:, 1:] == values[:, :-1]
        if equal.any():  # rare for real-valued maxima: fix only the rows concerned
            tied = equal.any(dim=1).nonzero().flatten()
            stable = torch.sort(scores[tied], dim=1, descending=True, stable=True).indices
            order[tied] = stable[:, :extra]
        return order[:, :k]
    # Elsewhere the check above would synchronise with the host: sort stably.
    return torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]


def _reduce(out: torch.Tensor, threshold: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The maxima of one layer's batch output ``out`` (N, C, H, W) over each map, and their
    flat positions (first occurrence), both (N, C), on ``out``'s device.

    With a ``threshold`` (C,) (the channels' current k-th best score; CPU only) the positions
    are found only where the maximum beats it (-1 elsewhere): only those images can enter the
    top k. The maxima then come from ``amax`` (multi-threaded, one pass), and the positions
    from a copy of those few maps: after the first batches few images beat the k-th best, so
    a long scan costs about one ``amax`` per output. Without one (the first batch, where most
    images enter, and other devices, where selecting maps would synchronise with the host),
    one max-with-position pass over every map gives both.
    """
    n, c = out.shape[:2]
    flat = out.detach().reshape(n, c, -1)  # a view unless out is channels-last
    length = flat.shape[2]
    if length == 1:
        return flat[:, :, 0], torch.zeros(n, c, dtype=torch.int64, device=flat.device)
    if threshold is None:
        pos = _argmax_rows(flat.reshape(n * c, length)).view(n, c)
        return flat.gather(2, pos.unsqueeze(2)).squeeze(2), pos
    vals = flat.amax(dim=2)
    pos = torch.full((n * c,), -1, dtype=torch.int64)
    beat = torch.nonzero((vals > threshold).flatten()).flatten()
    if len(beat):
        pos[beat] = _argmax_rows(flat.reshape(n * c, length).index_select(0, beat))
    return vals, pos.view(n, c)


# --------------------------------------------------------------------------------------------
# scan
# --------------------------------------------------------------------------------------------


class _AllSeen(Exception):
    """Raised from the last hook of a pass: the rest of the forward pass is not needed."""


class _Scanner:
    """The scan's state and its forward hooks.

    Each hook reduces its layer's output to per-channel maxima and positions (``pending``);
    after the pass one merge, for every channel of every layer at once, updates the running
    top k. ``_state`` (the merged ``_Top`` and the number of images in it) is replaced in one
    assignment per batch, so an interrupt sees the previous batch's state or this one's, never
    a mix.
    """

    def __init__(self, names: list[str], k: int, dtype: torch.dtype | None) -> None:
        self.names, self.k = names, k
        # Scores are float32, float64 for a float64 model (exact for every float dtype then).
        self.score_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        self._state: tuple[_Top | None, int] = (None, 0)
        self.pending: dict[str, tuple[torch.Tensor, torch.Tensor] | str] = {}
        self.shapes: dict[str, tuple[int, int, int]] = {}
        self.offsets: dict[str, int] = {}  # first row of each layer in the stacked state
        self.threshold: torch.Tensor | None = None  # (ΣC,) k-th best score, once k are kept
        self.batch = 0  # images in the current pass

    @property
    def done(self) -> int:
        return self._state[1]

    def hook(self, name: str) -> Callable:
        def hook(_module: nn.Module, _inputs: Any, out: Any) -> None:
            pending = self.pending
            if name in pending:
                return  # a later call of a reused module: the first one counts
            if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[0] == self.batch:
                shape = (int(out.shape[1]), int(out.shape[2]), int(out.shape[3]))
                if self.shapes.setdefault(name, shape) != shape:
                    pending[name] = (f"a map of shape {shape} per image, but {self.shapes[name]} "
                                     f"before, for inputs of the same size")
                else:
                    threshold = None
                    if self.threshold is not None and out.device.type == "cpu":
                        start = self.offsets[name]
                        threshold = self.threshold[start:start + shape[0]]
                    pending[name] = _reduce(out, threshold)
            else:
                pending[name] = (
                    f"a {out.dim()}-D tensor of shape {tuple(out.shape)}, not an (N, C, H, W) map "
                    f"of the batch" if isinstance(out, torch.Tensor)
                    else f"a {type(out).__name__}, not an (N, C, H, W) map of the batch"
                )
            if len(pending) == len(self.names):
                raise _AllSeen  # the rest of the forward pass is not needed

        return hook

    def run(self, model: nn.Module, batch: torch.Tensor, hooked: dict[str, nn.Module]) -> None:
        """One forward pass over ``batch``, then merge and commit its maxima."""
        first = self.done
        last = first + len(batch) - 1
        self.pending.clear()
        self.batch = len(batch)
        try:
            model(batch)
        except _AllSeen:
            pass
        except Exception as err:
            if len(self.pending) < len(self.names):  # else: the model wrapped our _AllSeen
                raise ModelError(
                    f"model: its forward pass on source[{first}]..source[{last}] (a batch of "
                    f"shape {tuple(batch.shape)}) raised {type(err).__name__}: {err}. Check that "
                    f"the model accepts (N, 3, H, W) image batches of this size; for another "
                    f"size pass a transform=."
                ) from err
        for name in self.names:
            got = self.pending.get(name)
            if got is None:
                raise ValueError(
                    f"layers: {name!r} did not run during the forward pass on "
                    f"source[{first}]..source[{last}], so it has no output to scan; pick modules "
                    f"that the model's forward() calls."
                )
            if isinstance(got, str):
                raise ValueError(
                    f"layers: {name!r} ({type(hooked[name]).__name__}) outputs {got}; pick "
                    f"modules with spatial outputs."
                )
        if not self.offsets:
            start = 0
            for name in self.names:
                self.offsets[name] = start
                start += self.shapes[name][0]
        vals = torch.cat([self.pending[n][0].to(self.score_dtype) for n in self.names], dim=1)
        pos = torch.cat([self.pending[n][1] for n in self.names], dim=1)
        self.pending.clear()
        top = self._merge(self._state[0], vals, pos, first)
        self.threshold = top.scores[:, -1] if top.scores.shape[1] >= self.k else None
        self._state = (top, last + 1)

    def _merge(
        self, old: _Top | None, vals: torch.Tensor, pos: torch.Tensor, first: int,
        full: bool = False,
    ) -> _Top:
        """Merge a batch's (N, ΣC) maxima and positions into the running top k; earlier
        images stay first on ties (the old entries come first and the order is stable)."""
        n, rows = vals.shape
        scores = torch.nan_to_num(vals.t(), nan=-math.inf, posinf=math.inf, neginf=-math.inf)
        indices = torch.arange(first, first + n, device=vals.device).expand(rows, n)
        positions = pos.t()
        if not full and old is not None and old.scores.shape[1] >= self.k and vals.is_cpu:
            # Once k images are kept, a row changes only if a new maximum beats its k-th best;
            # in a long scan few do, so merge just those (about as fast when all do).
            changed = torch.nonzero((scores > old.scores[:, -1:]).any(dim=1)).flatten()
            if len(changed) == 0:
                return old  # never modified in place, so it can be shared
            if len(changed) < rows // 2:  # else the full merge below is as fast
                sub = self._merge(
                    _Top(*(t[changed] for t in (old.scores, old.indices, old.positions))),
                    vals[:, changed], pos[:, changed], first, full=True,
                )
                merged = _Top(*(t.clone() for t in (old.scores, old.indices, old.positions)))
                for table, part in zip((merged.scores, merged.indices, merged.positions), (
                        sub.scores, sub.indices, sub.positions)):
                    table[changed] = part
                return merged
        if old is not None:
            scores = torch.cat((old.scores, scores), dim=1)
            indices = torch.cat((old.indices, indices), dim=1)
            positions = torch.cat((old.positions, positions), dim=1)
        order = _best(scores, self.k)
        return _Top(*(t.gather(1, order) for t in (scores, indices, positions)))

    def layer_tables(self) -> dict[str, _Top]:
        """The committed top k of each layer, on the CPU."""
        top = self._state[0]
        if top is None:
            return {}
        top = _Top(*(t.cpu() for t in (top.scores, top.indices, top.positions)))
        return {
            name: _Top(*(t[start:start + self.shapes[name][0]].clone() for t in
                         (top.scores, top.indices, top.positions)))
            for name, start in self.offsets.items()
        }


def _check_int(value: Any, name: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int ({what}), got {type(value).__name__} {value!r}.")
    if value < 1:
        raise ValueError(f"{name} must be a positive int ({what}), got {value}.")
    return int(value)


def _layers(model: nn.Module, layers: Any) -> dict[str, nn.Module]:
    if isinstance(layers, str) or not isinstance(layers, (list, tuple)) or not layers:
        hint = f" For one layer pass [{layers!r}]." if isinstance(layers, str) else ""
        raise TypeError(
            f"layers must be a non-empty list of module names from model.named_modules(), e.g. "
            f"['layer1.0.conv1']; got {layers!r}.{hint}"
        )
    modules = {name: m for name, m in model.named_modules() if name}
    chosen: dict[str, nn.Module] = {}
    for item in layers:  # duplicates are scanned once
        name = resolve_layer(list(modules), item, argname="layers")
        chosen[name] = modules[name]
    return chosen


def scan(
    model: nn.Module,
    source: Any,
    *,
    layers: Sequence[str],
    k: int = 9,
    batch_size: int = 16,
    transform: Callable | None = None,
    device: torch.device | str | None = None,
    progress: Callable[[int, int | None, float], Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ScanResult:
    """Run ``model`` over many images and keep every channel's top ``k`` images.

    For each image and each channel of each layer the score is the channel's maximum over the
    map (its first position on ties); per channel the ``k`` best images are kept.

    Parameters
    ----------
    model : torch.nn.Module
        Run in eval mode under ``torch.no_grad()`` on its own device; left exactly as it was.
    source : str, os.PathLike, list, tuple, Dataset, batch or iterable
        - a folder: image files (``IMAGE_EXTENSIONS``, any case) in it and its subfolders,
          sorted by their path below it; hidden files and folders are skipped;
        - a list or tuple of images, anything :func:`fmwidget.loading.load_image` reads;
        - a ``torch.utils.data.Dataset`` (or any object with ``__len__`` and
          ``__getitem__``), an ``IterableDataset``, a generator or any iterable, yielding
          images or ``(image, label)`` pairs (the label is ignored);
        - a 4-D tensor or array, a batch of images.
        A float ``(3, H, W)`` tensor is a model input and used as it is; other images go
        through ``transform``.
    layers : list of str
        Module names from ``model.named_modules()`` with ``(N, C, H, W)`` outputs; a module
        called several times in a forward pass is taken at its first call.
    k : int, optional
        Images kept per channel.
    batch_size : int, optional
        Images per forward pass.
    transform : Preprocess, torchvision weights transform, callable or None
        Preprocessing (None: :func:`fmwidget.imagenet_transform`). Every input must come out
        the same size.
    device : torch.device or str, optional
        Must be the model's device (the default); the model is never moved.
    progress : callable, optional
        ``progress(done, total, images_per_second)`` after every batch; ``total`` is None for
        an iterable without ``len``.
    should_stop : callable, optional
        ``should_stop() -> bool``, checked before every batch; True ends the scan, keeping
        what was scanned.

    Returns
    -------
    ScanResult
        With ``stopped=True`` when ``should_stop`` or a ``KeyboardInterrupt`` ended the scan
        (see the module notes: the interrupt is not re-raised).

    Raises
    ------
    TypeError, ValueError, OSError
        For bad arguments and bad sources or items (the message names ``source[i]`` and the
        fix); nothing is returned then.
    fmwidget.capture.ModelError
        When the model raises on a batch.

    Examples
    --------
    >>> import torchvision
    >>> model = torchvision.models.resnet18(weights=None)
    >>> res = scan(model, [torch.rand(3, 64, 64) for _ in range(6)], layers=["layer1.0.conv1"],
    ...            k=2, batch_size=4)
    >>> res.n_images, res.shapes["layer1.0.conv1"], tuple(res.indices["layer1.0.conv1"].shape)
    (6, (64, 16, 16), (64, 2))
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    hooked = _layers(model, layers)
    k = _check_int(k, "k", "images kept per channel")
    batch_size = _check_int(batch_size, "batch_size", "images per forward pass")
    for name, fn in (("progress", progress), ("should_stop", should_stop)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be a callable or None, got {type(fn).__name__}.")
    dev = check_device(model, device)
    dtype = model_dtype(model)
    src = open_source(source)

    names = list(hooked)
    scanner = _Scanner(names, k, dtype)
    input_size: tuple[int, int] | None = None
    stopped, reason = False, None
    items = enumerate(src.iterate())
    started = time.perf_counter()
    try:
        with model_state(model, eval_mode=True) as handles, torch.no_grad():
            for name, module in hooked.items():
                handles.append(module.register_forward_hook(scanner.hook(name)))
            while True:
                if should_stop is not None and should_stop():
                    stopped, reason = True, "should_stop"
                    break
                xs: list[torch.Tensor] = []
                first = scanner.done
                while len(xs) < batch_size:
                    try:
                        index, item = next(items)
                    except StopIteration:
                        break
                    except Exception as err:  # the user's dataset raised: keep its error
                        if hasattr(err, "add_note"):  # Python 3.11+
                            err.add_note(f"(raised reading source[{first + len(xs)}] for "
                                         f"fmwidget.scan; the scan kept nothing)")
                        raise
                    x = load_item(unpack_item(item, index), index, transform, src)
                    if input_size is None:
                        input_size = (int(x.shape[2]), int(x.shape[3]))
                    elif tuple(x.shape[2:]) != input_size:
                        raise ValueError(
                            f"source[{index}] gives a {x.shape[2]} x {x.shape[3]} model input, "
                            f"but source[0] gave {input_size[0]} x {input_size[1]}: images of "
                            f"different sizes cannot be batched (nor their positions compared). "
                            f"Pass a transform with a fixed crop, e.g. "
                            f"transform=fmwidget.imagenet_transform() (224 x 224), or resize "
                            f"the inputs to one size."
                        )
                    xs.append(x)
                if not xs:
                    break
                batch = torch.cat(xs)
                del xs
                batch = batch.to(device=dev, dtype=dtype) if dtype else batch.to(dev)
                scanner.run(model, batch, hooked)
                del batch
                if progress is not None:
                    elapsed = max(time.perf_counter() - started, 1e-9)
                    progress(scanner.done, src.total, scanner.done / elapsed)
    except KeyboardInterrupt:
        stopped, reason = True, "KeyboardInterrupt"
    finally:
        scanner.pending.clear()
        del items
        if src.get is None:  # a one-shot iterable: the result must not keep it (or its data)
            src.iterate = lambda: iter(())

    while True:  # an interrupt that lands here (Stop, late) still ends the scan cleanly
        try:
            n_images, shapes, tables = scanner.done, scanner.shapes, scanner.layer_tables()
            break
        except KeyboardInterrupt:
            stopped, reason = True, "KeyboardInterrupt"
    if n_images == 0 and not stopped:
        raise ValueError(
            f"source: the {src.kind} yielded no images; pass a source with at least one image."
        )
    sources: Sequence = src.paths[:n_images] if src.paths is not None else range(n_images)
    return ScanResult(
        layers=names,
        shapes=shapes if n_images else {},
        input_size=input_size if n_images else None,
        n_images=n_images,
        k=k,
        stopped=stopped,
        reason=reason,
        sources=sources,
        scores={n: t.scores for n, t in tables.items()},
        indices={n: t.indices for n, t in tables.items()},
        positions={n: t.positions for n, t in tables.items()},
        transform=transform,
        model=model,
        reader=src,
    )
