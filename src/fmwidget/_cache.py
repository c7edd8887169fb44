"""A byte-bounded LRU cache of encoded pictures, filled on demand or by a background prefetch."""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Hashable

from ._pools import shared_pool

__all__ = ["PictureCache"]

def _prefetch_pool() -> ThreadPoolExecutor:
    """One prefetch thread for every widget (see :mod:`fmwidget._pools`): a notebook kernel
    serves one cell at a time."""
    return shared_pool("fmwidget-prefetch", 1)


class PictureCache:
    """LRU cache bounded by bytes and entries, with one background worker for prefetching.

    ``get(key, build)`` returns the cached value, waits for a prefetch of the same key that is
    already running, or builds it in the caller's thread. ``prefetch(keys, build)`` queues
    builds on the worker; queued ones are dropped when newer prefetches arrive, so a fast
    slider drag never builds a backlog.
    """

    def __init__(self, max_bytes: int = 48 * 2**20, max_items: int = 256) -> None:
        self.max_bytes = max_bytes
        self.max_items = max_items
        self._items: OrderedDict[Hashable, object] = OrderedDict()
        self._sizes: dict[Hashable, int] = {}
        self._inflight: dict[Hashable, Future] = {}
        self._lock = threading.Lock()
        self._queued: list[tuple[Hashable, Future]] = []
        self._closed = False
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        return sum(self._sizes.values())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def _put(self, key: Hashable, value: object, size: int) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            self._sizes[key] = size
            while self._items and (sum(self._sizes.values()) > self.max_bytes or len(self._items) > self.max_items):
                old, _ = self._items.popitem(last=False)
                self._sizes.pop(old, None)

    def put(self, key: Hashable, value: object, size: int) -> None:
        """Cache ``value``, built elsewhere (the widget's first picture, built beside the
        forward pass), as the most recently used entry."""
        self._put(key, value, size)

    def get(self, key: Hashable, build: Callable[[], object], size: Callable[[object], int]) -> object:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            pending = self._inflight.get(key)
        if pending is not None:
            try:
                return pending.result()
            except Exception:  # noqa: BLE001 - the prefetch failed; build here and raise here
                pass
        self.misses += 1
        value = build()
        self._put(key, value, size(value))
        return value

    def prefetch(self, keys: list, build: Callable[[Hashable], object], size: Callable[[object], int]) -> None:
        self._cancel_queued()
        if self._closed:
            return
        for key in keys:
            with self._lock:
                if key in self._items or key in self._inflight:
                    continue
                fut = _prefetch_pool().submit(self._run, key, build, size)
                self._inflight[key] = fut
            self._queued.append((key, fut))

    def when_ready(self, key: Hashable, callback: Callable[[Hashable, object], None]) -> None:
        """Call ``callback(key, value)`` once ``key`` is built: now (in this thread) if it is
        cached, from the worker when its prefetch finishes; not at all if it is neither (or its
        build fails)."""
        with self._lock:
            cached = key in self._items
            value = self._items.get(key)
            pending = None if cached else self._inflight.get(key)
        if cached:
            callback(key, value)
        elif pending is not None:
            pending.add_done_callback(
                lambda fut: callback(key, fut.result()) if not fut.cancelled() and fut.exception() is None else None
            )

    def _cancel_queued(self) -> None:
        for key, fut in self._queued:
            if fut.cancel():
                with self._lock:
                    self._inflight.pop(key, None)
        self._queued = []

    def _run(self, key: Hashable, build: Callable[[Hashable], object], size: Callable[[object], int]) -> object:
        try:
            value = build(key)
            self._put(key, value, size(value))
            return value
        finally:
            with self._lock:
                self._inflight.pop(key, None)

    def wait(self) -> None:
        """Block until queued prefetches are done (tests and benchmarks use this)."""
        for _key, fut in list(self._queued):
            if fut.cancelled():
                continue
            try:
                fut.result()
            except Exception:  # noqa: BLE001 - a failed prefetch is rebuilt on demand
                pass

    def clear(self) -> None:
        self._cancel_queued()
        with self._lock:
            self._items.clear()
            self._sizes.clear()

    def close(self) -> None:
        """Drop everything and queue nothing more; wait for a build of ours in progress."""
        self._closed = True
        self.clear()
        # Wait for a build in progress (milliseconds), so that nothing of the owner is still in
        # use once close() returns; not from the worker itself, which cannot wait for itself.
        if threading.current_thread().name.startswith("fmwidget-prefetch"):
            return
        with self._lock:
            running = list(self._inflight.values())
        for fut in running:
            try:
                fut.result()
            except BaseException:  # noqa: BLE001 - cancelled or failed: either way it is over
                pass
