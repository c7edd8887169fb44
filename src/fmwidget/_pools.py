"""Worker threads shared by every capture and widget, and kept between them.

Starting a thread costs 1.5-3 ms of a first view on a busy 2-core machine (the starter waits
until the new thread runs), so the background work (compacting a capture's copies, prefetching
pictures) runs in pools made once per process. Their threads are joined at interpreter exit
(concurrent.futures does it), so none is killed inside torch: a daemon thread that was aborted
the process with "terminate called without an active exception".
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

_POOLS: dict[str, ThreadPoolExecutor] = {}
_LOCK = threading.Lock()


def shared_pool(name: str, workers: int) -> ThreadPoolExecutor:
    """The process-wide pool called ``name`` (its threads are named after it), made on first use."""
    with _LOCK:
        pool = _POOLS.get(name)
        if pool is None:
            pool = _POOLS[name] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        return pool
