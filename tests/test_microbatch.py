"""Micro-batching: requests that queue while the model is busy share its next call, and each caller
gets exactly its own rows back.

Concurrency is arranged with events, never with sleeps: the model's first call blocks on an event
until the test has queued the other requests, one at a time, each confirmed queued before the next is
sent (so the arrival order is the test's). `MicroBatcher` has no public count of waiting requests;
`queued` reads the length of its queue, the one private detail these tests rely on.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pytest

from resnet_mlops.serving.microbatch import MicroBatcher

TIMEOUT_S = 10  # for any one wait: a hang fails the test in seconds, it never blocks the suite


class Model:
    """Records every stacked batch it is called with and answers each row with `10 * row + 1`.

    Its first call signals `busy` and holds the model until `release` is set, so that other
    requests queue meanwhile. A call whose batch contains `poison` raises `ModelFailure`.
    """

    def __init__(self, poison: int | None = None):
        self.calls: list[np.ndarray] = []
        self.busy = threading.Event()
        self.release = threading.Event()
        self.poison = poison

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        self.calls.append(pixels.copy())
        if len(self.calls) == 1:
            self.busy.set()
            assert self.release.wait(TIMEOUT_S), "the test never released the model"
        if self.poison is not None and (pixels == self.poison).any():
            raise ModelFailure(f"the model failed on {self.poison}")
        return pixels * 10 + 1


class ModelFailure(Exception):
    pass


def rows(first: int, count: int) -> np.ndarray:
    """`count` rows of two values each, unique to this request (values first .. first + 2*count - 1)."""
    return np.arange(first, first + 2 * count).reshape(count, 2)


def queued(batcher: MicroBatcher) -> int:
    return len(batcher._queue)  # no public count of waiting requests (see the module docstring)


def wait_until(condition, what: str) -> None:
    """Poll an observable condition until it holds; fail after TIMEOUT_S."""
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.001)


class BusyModel:
    """A batcher whose model is held by a first request, and requests queued behind it in a known order."""

    def __init__(self, pool: ThreadPoolExecutor, model: Model, max_images: int):
        self.pool, self.model = pool, model
        self.batcher = MicroBatcher(model, max_images=max_images)
        self.first_rows = rows(-2, 1)
        self.first = pool.submit(self.batcher, self.first_rows)
        assert model.busy.wait(TIMEOUT_S), "the first request never reached the model"

    def queue(self, pixels: np.ndarray) -> Future:
        """Send one request and return once it waits in the batcher's queue."""
        before = queued(self.batcher)
        future = self.pool.submit(self.batcher, pixels)
        wait_until(lambda: queued(self.batcher) == before + 1, "the request is queued")
        return future

    def release(self) -> None:
        self.model.release.set()
        assert answer(self.first).tolist() == (self.first_rows * 10 + 1).tolist()


def answer(future: Future):
    """The request's result, or the exception it raised."""
    try:
        return future.result(TIMEOUT_S)
    except ModelFailure as error:
        return error


@pytest.fixture
def pool():
    with ThreadPoolExecutor(max_workers=12) as executor:
        yield executor


def test_alone_a_request_runs_at_once_as_its_own_call():
    model = Model()
    model.release.set()  # nothing to wait for
    batcher = MicroBatcher(model, max_images=8)
    assert batcher(rows(0, 3)).tolist() == (rows(0, 3) * 10 + 1).tolist()
    assert [call.tolist() for call in model.calls] == [rows(0, 3).tolist()]
    assert queued(batcher) == 0


def test_requests_queued_while_the_model_is_busy_all_share_its_next_call(pool):
    busy = BusyModel(pool, Model(), max_images=64)
    sent = [rows(100 * i, 1 + i % 3) for i in range(6)]  # 1 to 3 rows each, 12 in all
    futures = [busy.queue(pixels) for pixels in sent]
    busy.release()
    for future in futures:
        answer(future)
    assert [len(call) for call in busy.model.calls] == [1, 12]  # the busy call, then one call for all six
    assert queued(busy.batcher) == 0


def test_each_caller_gets_exactly_its_own_rows_back(pool):
    busy = BusyModel(pool, Model(), max_images=64)
    sent = [rows(100 * i, count) for i, count in enumerate((3, 1, 2, 4))]
    futures = [busy.queue(pixels) for pixels in sent]
    busy.release()
    for pixels, future in zip(sent, futures, strict=True):
        got = answer(future)
        assert got.shape == pixels.shape
        assert got.tolist() == (pixels * 10 + 1).tolist()


def test_a_shared_call_stacks_the_requests_in_arrival_order(pool):
    busy = BusyModel(pool, Model(), max_images=64)
    a, b, c, d = rows(100, 2), rows(200, 1), rows(300, 3), rows(400, 1)
    arrival = [c, a, d, b]  # neither the order of the values nor of the sizes
    futures = [busy.queue(pixels) for pixels in arrival]
    busy.release()
    for future in futures:
        answer(future)
    shared = busy.model.calls[1]
    assert shared.tolist() == np.concatenate(arrival).tolist()


def test_a_shared_call_never_holds_more_than_max_images(pool):
    busy = BusyModel(pool, Model(), max_images=7)
    sent = [rows(100 * i, 3) for i in range(5)]  # 15 rows: 3 + 3 fit in 7, a third would not
    futures = [busy.queue(pixels) for pixels in sent]
    busy.release()
    for pixels, future in zip(sent, futures, strict=True):
        assert answer(future).tolist() == (pixels * 10 + 1).tolist()
    calls = [call.tolist() for call in busy.model.calls[1:]]
    assert calls == [np.concatenate(sent[0:2]).tolist(), np.concatenate(sent[2:4]).tolist(), sent[4].tolist()]


def test_a_request_larger_than_max_images_runs_whole_in_a_call_of_its_own(pool):
    busy = BusyModel(pool, Model(), max_images=4)
    small, large, after = rows(100, 1), rows(200, 6), rows(300, 1)
    futures = [busy.queue(pixels) for pixels in (small, large, after)]
    busy.release()
    for pixels, future in zip((small, large, after), futures, strict=True):
        assert answer(future).tolist() == (pixels * 10 + 1).tolist()
    assert [len(call) for call in busy.model.calls[1:]] == [1, 6, 1]


def test_a_model_error_reaches_exactly_the_callers_of_that_call_and_the_batcher_goes_on(pool):
    busy = BusyModel(pool, Model(poison=777), max_images=4)
    fine_before = rows(100, 2)
    poisoned = np.array([[777, 778], [779, 780]])
    fine_after = rows(300, 2)  # the limit of 4 puts it in the next call, after the failing one
    futures = [busy.queue(pixels) for pixels in (fine_before, poisoned, fine_after)]
    busy.release()
    outcomes = [answer(future) for future in futures]

    assert [len(call) for call in busy.model.calls[1:]] == [4, 2]
    assert isinstance(outcomes[0], ModelFailure) and isinstance(outcomes[1], ModelFailure)
    assert outcomes[0] is outcomes[1]  # the one failure of their shared call, raised to each
    assert outcomes[2].tolist() == (fine_after * 10 + 1).tolist()

    later = rows(500, 3)
    assert busy.batcher(later).tolist() == (later * 10 + 1).tolist()  # the batcher still works
    with pytest.raises(ModelFailure, match="777"):
        busy.batcher(poisoned)
    assert queued(busy.batcher) == 0
