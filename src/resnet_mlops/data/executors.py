"""Where prepare's units of work run: local worker processes, or a Dask cluster when one is named.

Both are used through the same two calls, `submit(fn, task)` and `future.result()`, so the
prepare code does not know which it has. A unit is a chunk of files' bytes in, pixels and
verdicts out (reading), or a block of pixels in, its framed TFRecords and moments out (writing):
nothing on the workers has to see the project's files, so any Dask cluster
with this package installed will do (`data.dask_scheduler: tcp://host:8786`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Iterator

from resnet_mlops.config import DataSettings
from resnet_mlops.errors import UserError


@contextlib.contextmanager
def executor(settings: DataSettings) -> Iterator[tuple[object, int]]:
    """(an executor, how many units it runs at once)."""
    if settings.dask_scheduler:
        from distributed import Client

        try:
            client = Client(settings.dask_scheduler, timeout="10s", set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise UserError(f"data.dask_scheduler: cannot reach a Dask scheduler at {settings.dask_scheduler} "
                            f"({exc}); start one (`dask scheduler`) or leave the key empty") from None
        with client:
            slots = sum(client.nthreads().values())
            if not slots:
                raise UserError(f"data.dask_scheduler: the Dask cluster at {settings.dask_scheduler} has no workers")
            yield _Dask(client), slots
        return
    workers = max(1, min(settings.workers or os.cpu_count() or 1, 8))
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        # Start the workers now, while this process is small: a forked worker starts with a copy
        # of its parent's memory map, and every page the parent touches after the fork is copied.
        pool.submit(os.getpid).result()
        yield pool, workers


class _Dask:
    """A distributed.Client seen as an executor: tasks are not hashed for deduplication (pure=False)."""

    def __init__(self, client):
        self.client = client

    def submit(self, fn: Callable, task):
        return self.client.submit(fn, task, pure=False)


def in_order(pool, slots: int, fn: Callable, tasks: Iterable) -> Iterator:
    """fn(task) for every task, in order, with at most 2 * slots + 2 in flight (bounded memory)."""
    pending: deque = deque()
    for task in tasks:
        pending.append(pool.submit(fn, task))
        if len(pending) >= 2 * slots + 2:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
