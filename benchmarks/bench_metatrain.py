"""Meta-iterations per second of FOMAML and Reptile: fast path vs the step-by-step API.

    python benchmarks/bench_metatrain.py [--omniglot-iterations 20] [--sinusoid-iterations 2000]

(a) sinusoid: K=10 points, 5 inner Adam(beta_1=0) steps, meta-batch 5 (the original README settings);
(b) Omniglot-shaped synthetic data: 28x28x1, 5-way 5-shot, 15 query per class, the Omniglot CNN,
    5 inner SGD steps, meta-batch 5; in float32 and in mixed bfloat16.
Every figure includes drawing the tasks (as a training run does); tracing is timed apart (first call).
Prints a markdown table.
"""

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from pymeta.core.task import ClassificationTask  # noqa: E402
from pymeta.core.task_distribution import TaskDistribution  # noqa: E402
from pymeta.metalearners import FOMAMLMetaLearner, ReptileMetaLearner  # noqa: E402
from pymeta.networks import make_omniglot_cnn_model, make_sinusoid_model  # noqa: E402
from pymeta.tasks.sinusoid_tasks import create_sinusoid_task_distribution  # noqa: E402

ALGOS = {"FOMAML": (FOMAMLMetaLearner, lambda: keras.optimizers.Adam(0.001)),
         "Reptile": (ReptileMetaLearner, lambda: keras.optimizers.SGD(1.0))}


def omniglot_like_distribution():
    rng = np.random.RandomState(0)
    X = rng.randint(0, 256, (200 * 20, 28, 28, 1), dtype=np.uint8)
    y = np.repeat(np.arange(200), 20)
    return TaskDistribution([ClassificationTask(X, y, 5, 15, 5, split_train_test=-1)], [1.0], batch_size=5)


def run(mode, ml, dist, iterations, T, B, per_call, repeats=1):
    """Meta-iterations per second over `repeats` windows of `iterations` meta-iterations each (after
    one warm-up call); returns (list of rates, warm-up seconds)."""
    def step(n):
        if mode == "fast":
            ml.metatrain_steps([dist.sample_batch() for _ in range(n)], T, B)
            return
        for _ in range(n):
            results = []
            for task in dist.sample_batch():
                ml.task_begin(task)
                task.fit_n_iterations(ml.model, T, B)
                results.append(ml.task_end(task))
            ml.update(results)

    t0 = time.perf_counter()
    step(per_call)
    warmup = time.perf_counter() - t0
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        done = 0
        while done < iterations:
            step(per_call)
            done += per_call
        rates.append(done / (time.perf_counter() - t0))
    return rates, warmup


def bench(problem, algo, mode, iterations, precision="float32", per_call=1, repeats=1):
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(0)
    np.random.seed(0)
    cls, meta_opt = ALGOS[algo]
    if problem == "sinusoid":
        model = make_sinusoid_model()
        inner = keras.optimizers.Adam(0.01, beta_1=0.0)
        model.compile(optimizer=inner, loss="mse")
        dist = create_sinusoid_task_distribution(num_training_samples=10, num_test_samples=100, batch_size=5)[0]
        ml = cls(model, meta_opt(), jit_compile=True)
        T, B = 5, 10
    else:
        model = make_omniglot_cnn_model(5)
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
        dist = omniglot_like_distribution()
        ml = cls(model, meta_opt())
        T, B = 5, -1
    ml.initialize()
    rates, warmup = run(mode, ml, dist, iterations, T, B, per_call, repeats)
    keras.mixed_precision.set_global_policy("float32")
    return rates, warmup


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sinusoid-iterations", type=int, default=2000)
    parser.add_argument("--omniglot-iterations", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="timing windows per row: the table gives "
                        "their median and range (this VM's speed drifts)")
    parser.add_argument("--skip-step-by-step-omniglot", action="store_true")
    parser.add_argument("--only-omniglot", action="store_true", help="skip the sinusoid rows")
    parser.add_argument("--intra-op-threads", type=int, default=0, help="0: TensorFlow's default (all cores)")
    parser.add_argument("--inter-op-threads", type=int, default=0, help="0: TensorFlow's default")
    args = parser.parse_args()
    if args.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    if args.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} cores, "
          f"{platform.processor() or platform.machine()}\n")
    rows = []
    for algo in ([] if args.only_omniglot else ALGOS):
        for mode, per_call in (("fast", 10), ("fast", 1), ("step-by-step", 1)):
            n = args.sinusoid_iterations if mode == "fast" else args.sinusoid_iterations // 10
            rates, warm = bench("sinusoid", algo, mode, n, per_call=per_call, repeats=args.repeats)
            label = f"{mode} ({per_call} meta-batch{'es' if per_call > 1 else ''}/call)" if mode == "fast" else mode
            rows.append(("sinusoid", algo, label, "float32", rates, warm))
            print(rows[-1], flush=True)
    for algo in ALGOS:
        for precision in ("float32", "mixed_bfloat16"):
            for mode in ("fast", "step-by-step"):
                if mode == "step-by-step" and (args.skip_step_by_step_omniglot or precision != "float32"):
                    continue
                rates, warm = bench("omniglot", algo, mode, args.omniglot_iterations, precision,
                                    repeats=args.repeats)
                rows.append(("Omniglot-shaped", algo, mode, precision, rates, warm))
                print(rows[-1], flush=True)
    print(f"\n| problem | algorithm | path | precision | meta-iterations/s (median of {args.repeats}) "
          "| range | first call (trace) s |")
    print("|---|---|---|---|---:|---:|---:|")
    for problem, algo, mode, precision, rates, warm in rows:
        print(f"| {problem} | {algo} | {mode} | {precision} | {np.median(rates):.2f} "
              f"| {min(rates):.2f}-{max(rates):.2f} | {warm:.1f} |")


if __name__ == "__main__":
    main()
