"""Meta-iterations per second of FOMAML and Reptile: fast path vs the step-by-step API.

    python benchmarks/bench_metatrain.py [--omniglot-iterations 20] [--sinusoid-iterations 2000]
        [--miniimagenet-iterations 5] [--only-omniglot | --only-miniimagenet | --skip-miniimagenet]
        [--precision both|float32|mixed_bfloat16] [--layout all|default|task-parallel]

(a) sinusoid: K=10 points, 5 inner Adam(beta_1=0) steps, meta-batch 5 (the original README settings);
(b) Omniglot-shaped synthetic data: 28x28x1, 5-way 5-shot, 15 query per class, the Omniglot CNN,
    5 inner SGD steps, meta-batch 5; in float32 and in mixed bfloat16;
(c) Mini-ImageNet-shaped synthetic data: 84x84x3, 5-way 1-shot and 5-way 5-shot, 15 query per class,
    the 32-filter Conv-4 (make_miniimagenet_cnn_model), 5 inner SGD steps, meta-batch 4; in float32
    and in mixed bfloat16.
The baseline is the issue's reference point, a straightforward compiled Keras 3 loop (one compiled
call per inner step, per task), timed in the same run; the conv-net rows give their ratio to the
baseline of the same problem and algorithm.
Each thread layout runs in its own process (TensorFlow fixes its thread pools at start-up):
"default" (TensorFlow's) and "task-parallel" (one thread per op, as many tasks of a meta-batch at
once as there are cores). Every figure includes drawing the tasks (as a training run does); tracing
is timed apart (first call). Prints a markdown table.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from pymeta.core.task import ClassificationTask  # noqa: E402
from pymeta.core.task_distribution import TaskDistribution  # noqa: E402
from pymeta.metalearners import FOMAMLMetaLearner, ReptileMetaLearner  # noqa: E402
from pymeta.networks import make_miniimagenet_cnn_model, make_omniglot_cnn_model, make_sinusoid_model  # noqa: E402
from pymeta.tasks.sinusoid_tasks import create_sinusoid_task_distribution  # noqa: E402

BASELINE = "straightforward Keras loop"
ALGOS = {"FOMAML": (FOMAMLMetaLearner, lambda: keras.optimizers.Adam(0.001)),
         "Reptile": (ReptileMetaLearner, lambda: keras.optimizers.SGD(1.0))}


def omniglot_like_distribution():
    rng = np.random.RandomState(0)
    X = rng.randint(0, 256, (200 * 20, 28, 28, 1), dtype=np.uint8)
    y = np.repeat(np.arange(200), 20)
    return TaskDistribution([ClassificationTask(X, y, 5, 15, 5, split_train_test=-1)], [1.0], batch_size=5)


MINI_SHOTS = {"Mini-ImageNet-shaped 5-way 1-shot": 1, "Mini-ImageNet-shaped 5-way 5-shot": 5}


def miniimagenet_like_distribution(shots):
    """Random uint8 84x84x3 images, 64 classes x 32 (the real train split has 64 x 600; 32 are enough
    for K + 15 queries), meta-batch 4."""
    rng = np.random.RandomState(0)
    X = rng.randint(0, 256, (64 * 32, 84, 84, 3), dtype=np.uint8)
    y = np.repeat(np.arange(64), 32)
    return TaskDistribution([ClassificationTask(X, y, shots, 15, 5, split_train_test=-1)], [1.0], batch_size=4)


class KerasLoopBaseline:
    """The issue's reference point, "a straightforward compiled Keras 3 loop": per task, reset the
    model's weights to theta, run T compiled inner steps (one `tf.function` call each) with a Keras
    optimizer on the model's variables, then (FOMAML) a compiled query-gradient call; the outer step
    is a Keras optimizer applied to the mean. Same network, tasks and optimizers as pymeta's rows."""

    def __init__(self, algo, model, meta_optimizer, inner_lr):
        self.algo, self.model, self.meta_optimizer = algo, model, meta_optimizer
        self.inner_optimizer = keras.optimizers.SGD(inner_lr)
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy()
        self.variables = model.trainable_variables
        self.inner_step = tf.function(self._inner_step)
        self.query_grad = tf.function(self._query_grad)

    def _grads(self, x, y):
        with tf.GradientTape() as tape:
            loss = self.loss_fn(y, tf.cast(self.model(x, training=True), tf.float32))
        return tape.gradient(loss, self.variables)

    def _inner_step(self, x, y):
        self.inner_optimizer.apply(self._grads(x, y), self.variables)

    def _query_grad(self, x, y):
        return self._grads(x, y)

    def meta_step(self, tasks, T, B):
        theta = [tf.identity(v) for v in self.variables]
        results = []
        for task in tasks:
            for v, t in zip(self.variables, theta):
                v.assign(t)
            for _ in range(T):
                x, y = task.sample_batch(B)
                self.inner_step(tf.constant(x), tf.constant(y))
            if self.algo == "FOMAML":
                qx, qy = task.get_test_set()
                results.append(self.query_grad(tf.constant(qx), tf.constant(qy)))
            else:
                results.append([tf.identity(v) for v in self.variables])
        mean = [tf.add_n(list(r)) / len(results) for r in zip(*results)]
        for v, t in zip(self.variables, theta):
            v.assign(t)
        if self.algo == "Reptile":
            mean = [t - m for t, m in zip(theta, mean)]
        self.meta_optimizer.apply(mean, self.variables)


def run(mode, ml, dist, iterations, T, B, per_call, repeats=1):
    """Meta-iterations per second over `repeats` windows of `iterations` meta-iterations each (after
    one warm-up call); returns (list of rates, warm-up seconds, list of CPU seconds per meta-iteration of
    all the process's threads, one per window)."""
    def step(n):
        if mode == "fast":
            ml.metatrain_steps([dist.sample_batch() for _ in range(n)], T, B)
            return
        if mode == BASELINE:
            for _ in range(n):
                ml.meta_step(dist.sample_batch(), T, B)
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
    rates, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        done = 0
        while done < iterations:
            step(per_call)
            done += per_call
        rates.append(done / (time.perf_counter() - t0))
        cpu.append((time.process_time() - c0) / done)
    return rates, warmup, cpu


def bench(problem, algo, mode, iterations, precision="float32", per_call=1, repeats=1):
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(0)
    np.random.seed(0)
    cls, meta_opt = ALGOS[algo]
    shots = MINI_SHOTS.get(problem, 5)
    if problem == "sinusoid":
        model = make_sinusoid_model()
        inner = keras.optimizers.Adam(0.01, beta_1=0.0)
        model.compile(optimizer=inner, loss="mse")
        dist = create_sinusoid_task_distribution(num_training_samples=10, num_test_samples=100, batch_size=5)[0]
        ml = cls(model, meta_opt(), jit_compile=True)
        T, B = 5, 10
    else:
        model = make_omniglot_cnn_model(5) if problem == "Omniglot-shaped" else make_miniimagenet_cnn_model(5)
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
        dist = omniglot_like_distribution() if problem == "Omniglot-shaped" else miniimagenet_like_distribution(shots)
        T, B = 5, -1
        ml = cls(model, meta_opt())
    if mode == BASELINE:  # the same model, tasks and optimizers, driven by the plain Keras loop (B: N * K)
        ml, B = KerasLoopBaseline(algo, model, meta_opt(), float(model.optimizer.learning_rate)), 5 * shots
    else:
        ml.initialize()
    rates, warmup, cpu = run(mode, ml, dist, iterations, T, B, per_call, repeats)
    keras.mixed_precision.set_global_policy("float32")
    return rates, warmup, cpu


# thread layouts: (intra-op threads, inter-op threads), 0 = TensorFlow's default (all cores)
LAYOUTS = {"default": (0, 0), "task-parallel": (1, os.cpu_count() or 1)}


def rows_for_layout(args):
    """Benchmark rows measured in this process, under its thread layout."""
    rows = []
    default = args.layout == "default"

    def add(problem, algo, label, precision, iterations, mode=None, per_call=1):
        rates, warm, cpu = bench(problem, algo, mode or label, iterations, precision, per_call, args.repeats)
        rows.append(dict(problem=problem, algo=algo, path=label, precision=precision, layout=args.layout,
                         rates=rates, warmup=warm, cpu_s_per_it=cpu))
        print(rows[-1], flush=True)

    only_mini = args.only_miniimagenet
    for algo in ([] if args.only_omniglot or only_mini or not default else ALGOS):
        for mode, per_call in (("fast", 10), ("fast", 1), ("step-by-step", 1)):
            n = args.sinusoid_iterations if mode == "fast" else args.sinusoid_iterations // 10
            label = f"{mode} ({per_call} meta-batch{'es' if per_call > 1 else ''}/call)" if mode == "fast" else mode
            add("sinusoid", algo, label, "float32", n, mode, per_call)
    for algo in ([] if only_mini else ALGOS):
        if default:
            add("Omniglot-shaped", algo, BASELINE, "float32", args.omniglot_iterations)
            if not args.skip_step_by_step_omniglot:
                add("Omniglot-shaped", algo, "step-by-step", "float32", args.omniglot_iterations)
        for precision in args.precisions:
            add("Omniglot-shaped", algo, "fast", precision, args.omniglot_iterations)
    for problem in ([] if args.only_omniglot or args.skip_miniimagenet else MINI_SHOTS):
        for algo in ALGOS:
            if default:
                add(problem, algo, BASELINE, "float32", args.miniimagenet_iterations)
            for precision in args.precisions:
                add(problem, algo, "fast", precision, args.miniimagenet_iterations)
    return rows


def print_table(rows, repeats):
    """Markdown table; conv-net rows also as a ratio to the baseline loop (same problem and algorithm)
    of the same run."""
    base = {(r["problem"], r["algo"]): np.median(r["rates"]) for r in rows if r["path"] == BASELINE}
    print(f"\n| problem | algorithm | path | precision | threads (intra/inter) | meta-iterations/s "
          f"(median of {repeats}) | range | x baseline | first call (trace) s |")
    print("|---|---|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        intra, inter = LAYOUTS[r["layout"]]
        threads = "default" if not intra else f"{intra}/{inter}"
        rate = np.median(r["rates"])
        key = (r["problem"], r["algo"])
        ratio = f"{rate / base[key]:.2f}" if r["problem"] != "sinusoid" and key in base else ""
        print(f"| {r['problem']} | {r['algo']} | {r['path']} | {r['precision']} | {threads} | {rate:.2f} "
              f"| {min(r['rates']):.2f}-{max(r['rates']):.2f} | {ratio} | {r['warmup']:.1f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sinusoid-iterations", type=int, default=2000)
    parser.add_argument("--omniglot-iterations", type=int, default=20)
    parser.add_argument("--miniimagenet-iterations", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="timing windows per row: the table gives "
                        "their median and range (this VM's speed drifts)")
    parser.add_argument("--skip-step-by-step-omniglot", action="store_true")
    parser.add_argument("--precision", default="both", choices=["both", "float32", "mixed_bfloat16"],
                        help="precision of the conv-net fast-path rows (float32 only on a CPU without native "
                             "bfloat16, where it is emulated and several times slower)")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--only-omniglot", action="store_true", help="only the Omniglot-shaped rows")
    only.add_argument("--only-miniimagenet", action="store_true", help="only the Mini-ImageNet-shaped rows")
    only.add_argument("--skip-miniimagenet", action="store_true", help="no Mini-ImageNet-shaped rows")
    parser.add_argument("--layout", default="all", choices=["all", *LAYOUTS],
                        help="thread layout; all (default): each in its own process, one table")
    parser.add_argument("--json-out", help=argparse.SUPPRESS)  # a child process's rows
    args = parser.parse_args()
    args.precisions = ("float32", "mixed_bfloat16") if args.precision == "both" else (args.precision,)
    if args.layout == "all":
        rows = []
        for layout in LAYOUTS:
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "rows.json")
                child = [f"--sinusoid-iterations={args.sinusoid_iterations}",
                         f"--omniglot-iterations={args.omniglot_iterations}", f"--repeats={args.repeats}",
                         f"--miniimagenet-iterations={args.miniimagenet_iterations}",
                         *(["--skip-step-by-step-omniglot"] if args.skip_step_by_step_omniglot else []),
                         f"--precision={args.precision}",
                         *(["--only-omniglot"] if args.only_omniglot else []),
                         *(["--only-miniimagenet"] if args.only_miniimagenet else []),
                         *(["--skip-miniimagenet"] if args.skip_miniimagenet else [])]
                subprocess.run([sys.executable, __file__, *child, "--layout", layout, "--json-out", out],
                               check=True)
                with open(out) as f:
                    rows += json.load(f)
        print_table(rows, args.repeats)
        return
    intra, inter = LAYOUTS[args.layout]
    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} cores, "
          f"{platform.processor() or platform.machine()}, thread layout {args.layout}\n", flush=True)
    rows = rows_for_layout(args)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f)
    else:
        print_table(rows, args.repeats)


if __name__ == "__main__":
    main()
