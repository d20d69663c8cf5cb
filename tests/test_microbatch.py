"""Micro-batching: callers that wait for the model share its next call, and each gets its own rows back."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from resnet_mlops.microbatch import MicroBatcher


class Model:
    """Doubles its input; the first call holds the model for a while, so that others queue."""

    def __init__(self, fail_on: int | None = None):
        self.calls: list[int] = []
        self.fail_on = fail_on
        self.first_started = threading.Event()

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        self.calls.append(len(pixels))
        if len(self.calls) == 1:
            self.first_started.set()
            time.sleep(0.3)
        if self.fail_on is not None and self.fail_on in pixels:
            raise ValueError("the model failed")
        return pixels * 2


def queue_behind_a_busy_model(batcher: MicroBatcher, model: Model, batches: list[np.ndarray]) -> list:
    with ThreadPoolExecutor(len(batches) + 1) as pool:
        first = pool.submit(batcher, np.array([100]))
        model.first_started.wait(5)
        waiting = [pool.submit(batcher, batch) for batch in batches]
        time.sleep(0.1)  # all of them queued while the first call runs
        outcomes = []
        for future in waiting:
            try:
                outcomes.append(future.result(5))
            except ValueError as error:
                outcomes.append(error)
        assert first.result(5).tolist() == [200]
    return outcomes


def test_alone_a_call_runs_at_once_with_its_own_batch():
    model = Model()
    batcher = MicroBatcher(model, max_images=8)
    assert batcher(np.array([1, 2, 3])).tolist() == [2, 4, 6]
    assert model.calls == [3]


def test_callers_queued_behind_a_busy_model_share_one_call_and_get_their_own_rows():
    model = Model()
    batches = [np.arange(i * 10, i * 10 + 1 + i % 3) for i in range(6)]  # 1 to 3 rows each, 12 in all
    outcomes = queue_behind_a_busy_model(MicroBatcher(model, max_images=64), model, batches)
    assert [o.tolist() for o in outcomes] == [(b * 2).tolist() for b in batches]
    assert model.calls == [1, 12]


def test_a_shared_call_holds_at_most_max_images_in_arrival_order():
    model = Model()
    batches = [np.full(3, i) for i in range(5)]
    outcomes = queue_behind_a_busy_model(MicroBatcher(model, max_images=7), model, batches)
    assert [o.tolist() for o in outcomes] == [(b * 2).tolist() for b in batches]
    assert model.calls[0] == 1 and all(n <= 7 for n in model.calls[1:]) and sum(model.calls[1:]) == 15


def test_a_failing_call_fails_every_caller_in_it_and_the_next_call_works():
    model = Model(fail_on=7)
    batcher = MicroBatcher(model, max_images=64)
    outcomes = queue_behind_a_busy_model(batcher, model, [np.array([7]), np.array([8])])
    assert all(isinstance(o, ValueError) for o in outcomes)
    assert batcher(np.array([8])).tolist() == [16]
    with pytest.raises(ValueError, match="the model failed"):
        batcher(np.array([7]))
