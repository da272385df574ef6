"""pymeta.data.processes.Workers: parallel jobs in order, and never a hang: an error or a worker that
dies ends `map` at once, and no process outlives `close`."""

import multiprocessing
import os
import random
import threading
import time

import numpy as np
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
    """Their results would otherwise reach the next map. The jobs after the first sleep for a minute, so
    they are surely out when the caller stops (with quick jobs all may be back by then, and the workers
    then rightly stay open: the `zip` in the first test)."""
    w = workers(job)
    results = w.map([1, "sleep", "sleep", "sleep"])
    assert next(results) == 1
    start = time.monotonic()
    results.close()
    assert time.monotonic() - start < 30  # killed, not waited for
    assert multiprocessing.active_children() == []
    with pytest.raises(RuntimeError, match="closed"):
        next(w.map([1]))


def parse_name(name):
    if name == "bad":
        raise ValueError(f"cannot parse {name}")
    return np.full(3, float(name[3:]), np.float32)


def test_tasks_from_files_load_in_worker_processes_shared_by_their_copies():
    """ClassificationTaskFromFiles(num_parallel_processes=2): the arrays of the in-process load; one set
    of workers for the prototype and every copy a distribution draws (a pool per copy, made at its first
    load, was the old way); a file that fails raises its error and the next load works; no worker
    outlives the task."""
    from pymeta.core.task import ClassificationTaskFromFiles
    from pymeta.core.task_distribution import TaskDistribution
    names, y = [f"img{i}" for i in range(40)], np.repeat(np.arange(4), 10)
    tasks = {n: ClassificationTaskFromFiles(names, y, 2, 1, 3, input_parse_fn=parse_name, num_parallel_processes=n)
             for n in (None, 2)}
    assert len(multiprocessing.active_children()) == 2
    for n, task in tasks.items():
        np.random.seed(1)
        batches = [[t.get_train_set() + t.get_test_set() for t in TaskDistribution([task], [1.0], 4).sample_batch()]
                   for _ in range(3)]
        if n is None:
            expected = batches
        else:
            for got, want in zip(batches, expected):
                for a, b in zip(got, want):
                    for x, z in zip(a, b):
                        np.testing.assert_array_equal(x, z)
        assert len(multiprocessing.active_children()) == 2
    task = ClassificationTaskFromFiles(names[:-1] + ["bad"], y, 2, 1, 3, input_parse_fn=parse_name,
                                       num_parallel_processes=2)
    with pytest.raises(ValueError, match="cannot parse bad"):
        task._load_inputs(np.arange(30, 40))
    assert task._load_inputs(np.array([3, 1])).tolist() == [[3.0] * 3, [1.0] * 3]  # new workers
    assert len(multiprocessing.active_children()) == 4
    del task, tasks
    import gc
    gc.collect()
    assert multiprocessing.active_children() == []


def test_workers_end_when_their_parent_is_killed():
    """os._exit skips the exit handlers that kill daemon processes (as SIGKILL would): the workers see
    their pipe close and end, instead of waiting for a job forever."""
    import subprocess
    import sys
    code = ("import os, sys; from pymeta.data.processes import Workers; w = Workers(abs, 2); "
            "print(*[p.pid for p in w._processes.values()], flush=True); os._exit(0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2, out.stderr[-2000:]

    def alive(pid):
        try:
            with open(f"/proc/{pid}/status") as f:
                return "zombie" not in f.read()
        except OSError:
            return False

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(map(alive, pids)):
        time.sleep(0.1)
    assert not any(map(alive, pids))
