"""pymeta.data.processes.Workers: parallel jobs in order, and never a hang: an error or a worker that
dies ends `map` at once, and no process outlives `close`."""

import multiprocessing
import os
import random
import threading
import time

import pytest

from pymeta.data.processes import WorkerDied, Workers

pytestmark = pytest.mark.timeout(120)


def slow_square(x):
    time.sleep(random.random() * 0.01)  # results come back out of order
    return x * x


def job(x):
    if x == "raise":
        raise KeyError("bad job")
    if x == "die":
        os._exit(7)
    if x == "sleep":
        time.sleep(60)
    if x == "lock":
        return threading.Lock()  # does not pickle
    return x


@pytest.fixture
def workers():
    made = []

    def make(fn, count=2):
        made.append(Workers(fn, count))
        return made[-1]

    yield make
    for w in made:
        w.close()
    assert multiprocessing.active_children() == []


def test_results_in_the_order_of_the_jobs_as_a_plain_map(workers):
    w = workers(slow_square, 3)
    jobs = list(range(60))
    assert list(w.map(jobs, ahead=1)) == list(map(slow_square, jobs))
    assert list(zip(range(5), w.map(range(5)))) == [(i, i * i) for i in range(5)]  # taken to the end
    assert list(w.map(iter(range(7)))) == [i * i for i in range(7)]  # and used again


@pytest.mark.parametrize("bad, error, message", [
    ("raise", KeyError, "bad job"),
    ("die", WorkerDied, r"a worker process ended without the result of its job \(exit code 7\)"),
    ("lock", RuntimeError, "TypeError: cannot pickle '_thread.lock' object")])
def test_a_failing_job_ends_map_at_once_and_kills_the_workers(workers, bad, error, message):
    w = workers(job)
    start = time.monotonic()
    with pytest.raises(error, match=message):
        list(w.map(["sleep", 1, bad, 2]))  # a worker is busy for a minute meanwhile
    assert time.monotonic() - start < 30  # not waited for
    assert multiprocessing.active_children() == []
    with pytest.raises(RuntimeError, match="these workers are closed"):
        next(w.map([1]))


def test_stopping_with_jobs_out_closes_the_workers(workers):
    """Their results would otherwise reach the next map."""
    w = workers(slow_square)
    results = w.map(range(100))
    assert next(results) == 0
    results.close()
    with pytest.raises(RuntimeError, match="closed"):
        next(w.map([1]))
