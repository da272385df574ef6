"""What the host-side data checks cost the step-by-step API (`Learner.check_batch`: finite inputs and
targets, labels that fit the model), measured against the same loop with the checks switched off.

    python benchmarks/bench_data_checks.py [--windows 5] [--sinusoid-iterations 100] [--omniglot-iterations 5]

Each meta-iteration is the step-by-step API of a training run plus a step-by-step validation of each
task: per task `task_begin`, `fit_n_iterations` (checks the support and query sets), `evaluate`
(checks the query set again), `task_end`; then `update`. Problems as in bench_metatrain.py: sinusoid
(K=10, 5 inner Adam steps, meta-batch 5, XLA) and Omniglot-shaped 5-way 5-shot (15 queries, Conv-4,
5 inner SGD steps, meta-batch 5), FOMAML. Windows with and without the checks alternate, so a load that
changes during the run affects both alike; the medians are printed as a markdown table, with the cost
of one `check_batch` call on each problem's query set and on a Mini-ImageNet-shaped 5-way 5-shot
support + query set (75 + 25 images of 84x84x3), and the share of an iteration the checks take,
computed from the calls per iteration and their cost (steadier than the difference of two rates on a
loaded machine).
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import bench_metatrain as bench  # noqa: E402
from pymeta.core.learner import Learner  # noqa: E402
from pymeta.metalearners import FOMAMLMetaLearner  # noqa: E402
from pymeta.networks import make_omniglot_cnn_model, make_sinusoid_model  # noqa: E402
from pymeta.tasks.sinusoid_tasks import create_sinusoid_task_distribution  # noqa: E402

CHECK = Learner.check_batch


def problem(name):
    keras.utils.set_random_seed(0)
    np.random.seed(0)
    if name == "sinusoid":
        model = make_sinusoid_model()
        model.compile(optimizer=keras.optimizers.Adam(0.01, beta_1=0.0), loss="mse")
        dist = create_sinusoid_task_distribution(num_training_samples=10, num_test_samples=100, batch_size=5)[0]
        return FOMAMLMetaLearner(model, keras.optimizers.Adam(0.001), jit_compile=True), dist, 5, 10
    model = make_omniglot_cnn_model(5)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    return FOMAMLMetaLearner(model, keras.optimizers.Adam(0.001)), bench.omniglot_like_distribution(), 5, -1


def iteration(ml, dist, T, B):
    results = []
    for task in dist.sample_batch():
        ml.task_begin(task)
        task.fit_n_iterations(ml.model, T, B)
        task.evaluate(ml.model)
        results.append(ml.task_end(task))
    ml.update(results)


def checks_per_iteration(ml, dist, T, B):
    """How many `check_batch` calls one meta-iteration makes."""
    calls = []

    def counted(self, *args, **kwargs):
        calls.append(1)
        return CHECK(self, *args, **kwargs)
    Learner.check_batch = counted  # type: ignore
    try:
        iteration(ml, dist, T, B)
    finally:
        Learner.check_batch = CHECK  # type: ignore
    return len(calls)


def rates(name, iterations, windows):
    """(median meta-iterations/s with the checks, without them, check_batch calls per iteration, ml,
    dist) over alternating windows."""
    ml, dist, T, B = problem(name)
    ml.initialize()
    iteration(ml, dist, T, B)  # traces
    calls = checks_per_iteration(ml, dist, T, B)
    out = {True: [], False: []}
    for w in range(2 * windows):
        checks = w % 2 == 0
        Learner.check_batch = CHECK if checks else (lambda self, *args, **kwargs: None)  # type: ignore
        try:
            t0 = time.perf_counter()
            for _ in range(iterations):
                iteration(ml, dist, T, B)
            out[checks].append(iterations / (time.perf_counter() - t0))
        finally:
            Learner.check_batch = CHECK  # type: ignore
    return float(np.median(out[True])), float(np.median(out[False])), calls, ml, dist


def check_cost(ml, x, y, repeats=200):
    """Microseconds per `check_batch(x, y)` call (median of `repeats`)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ml.check_batch("query", x, y)
        times.append(time.perf_counter() - t0)
    return 1e6 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--sinusoid-iterations", type=int, default=100)
    parser.add_argument("--omniglot-iterations", type=int, default=5)
    args = parser.parse_args()
    print("| problem (FOMAML, step-by-step + evaluate) | with checks (it/s) | without (it/s) | measured cost | "
          "check_batch calls / it | one call (us) | computed share of an iteration |")
    print("|---|---|---|---|---|---|---|")
    for name, n in (("sinusoid", args.sinusoid_iterations), ("Omniglot-shaped 5-way 5-shot", args.omniglot_iterations)):
        on, off, calls, ml, dist = rates("sinusoid" if name == "sinusoid" else "omniglot", n, args.windows)
        x, y = dist.sample_batch(1)[0].get_test_set()
        cost = check_cost(ml, x, y)
        print(f"| {name} | {on:.2f} | {off:.2f} | {100 * (off / on - 1):+.1f}% | {calls} | {cost:.0f} | "
              f"{100 * calls * cost * 1e-6 * on:.3f}% |", flush=True)
    rng = np.random.RandomState(0)
    x = rng.rand(100, 84, 84, 3).astype(np.float32)  # 25 support + 75 query images
    y = np.repeat(np.arange(5), 20)
    mini = make_omniglot_cnn_model(5, input_shape=(84, 84, 3))
    mini.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    print(f"| Mini-ImageNet-shaped 5-way 5-shot support + query (one check) | | | | 1 | "
          f"{check_cost(Learner(mini), x, y, repeats=50):.0f} | |")


if __name__ == "__main__":
    main()
