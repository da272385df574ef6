"""Speed and memory of the second-order meta-learners (iMAML, MAML) next to FOMAML and Reptile.

    python benchmarks/bench_second_order.py [--iterations 5] [--maml-steps 1,5,10,20] [--skip-hvp]

Configuration (Omniglot-shaped, synthetic data): 28x28x1 images, 5-way 5-shot, 15 query examples per
class, `make_omniglot_cnn_model(5)` (64 filters), 5 inner SGD(0.01) steps on the whole support set,
meta-batch 5, float32, the compiled fast path (`metatrain_step`). iMAML: lambda 2, 5 CG steps.

Every configuration runs in a fresh Python process, so that its memory figures are its own:
+ meta-it/s: meta-iterations per second after a warm-up call (tracing excluded; drawing the tasks
  included, as in a training run);
+ peak RSS: the process's peak resident set size (`resource.getrusage(RUSAGE_SELF).ru_maxrss`), which
  includes the TensorFlow runtime, the data and graph tracing;
+ step memory: peak RSS minus the RSS measured just before the first meta-step (model and data built,
  TensorFlow initialised). This is the honest CPU proxy for the memory a meta-step needs (activations
  kept for backpropagation, Hessian-vector products, TensorFlow's buffers and the traced graph); it is
  not an allocator-exact figure (TensorFlow's CPU allocator does not report peaks).

Then MAML's and iMAML's step memory against the number of inner steps (MAML keeps every inner step's
activations for its backward pass; iMAML does not differentiate through the inner loop).
`--hvp` times the Hessian-vector product methods of `pymeta.hvp` on the same network and support set.
Prints markdown tables. Figures on a shared machine are noisy.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ALGOS = ("FOMAML", "Reptile", "iMAML", "MAML")


def rss_mib():
    """Current resident set size (MiB), from /proc."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def omniglot_like_distribution(shots=5):
    import numpy as np

    from pymeta.core.task import ClassificationTask
    from pymeta.core.task_distribution import TaskDistribution
    rng = np.random.RandomState(0)
    X = rng.randint(0, 256, (200 * 20, 28, 28, 1), dtype=np.uint8)
    y = np.repeat(np.arange(200), 20)
    return TaskDistribution([ClassificationTask(X, y, shots, 15, 5, split_train_test=-1)], [1.0], batch_size=5)


def worker(algo, steps, iterations, shots=5, precision="float32", inner_lr=0.01):
    """One configuration in this process; prints a JSON line. algo: FOMAML, Reptile, MAML, iMAML or
    iMAML:<inner mode>:<cg tol>."""
    import keras
    import numpy as np

    from pymeta.metalearners.fomaml import FOMAMLMetaLearner
    from pymeta.metalearners.imaml import iMAMLMetaLearner
    from pymeta.metalearners.maml import MAMLMetaLearner
    from pymeta.metalearners.reptile import ReptileMetaLearner
    from pymeta.networks import make_omniglot_cnn_model

    keras.utils.set_random_seed(0)
    np.random.seed(0)
    keras.config.set_dtype_policy(precision)
    model = make_omniglot_cnn_model(5)
    model.compile(optimizer=keras.optimizers.SGD(inner_lr), loss="sparse_categorical_crossentropy")
    if algo == "FOMAML":
        ml = FOMAMLMetaLearner(model, keras.optimizers.Adam(0.001))
    elif algo == "Reptile":
        ml = ReptileMetaLearner(model, keras.optimizers.SGD(1.0))
    elif algo.startswith("iMAML"):
        _, mode, tol = (algo.split(":") + ["proximal", "1e-6"])[:3] if ":" in algo else (algo, "proximal", "1e-6")
        ml = iMAMLMetaLearner(model, keras.optimizers.Adam(0.001), lambda_reg=2.0, n_iters_optimizer=5,
                              cg_damping=1.0, lam_damping=10.0, inner_mode=mode, cg_tol=float(tol))
    else:
        ml = MAMLMetaLearner(model, keras.optimizers.Adam(0.001))
    dist = omniglot_like_distribution(shots)
    ml.initialize()
    batches = [dist.sample_batch() for _ in range(iterations + 1)]
    before = rss_mib()
    t0 = time.perf_counter()
    ml.metatrain_step(batches[0], steps, -1)
    warmup = time.perf_counter() - t0
    t0, cpu = time.perf_counter(), time.process_time()
    cg_steps = []
    for tasks in batches[1:]:
        cg_steps.append(ml.metatrain_step(tasks, steps, -1).get("cg_steps", 0.0))
    elapsed = time.perf_counter() - t0
    cpu = (time.process_time() - cpu) / iterations  # CPU seconds of all the process's threads
    print(json.dumps({"algo": algo, "steps": steps, "its": iterations / elapsed, "warmup_s": warmup,
                      "cpu_s_per_it": cpu,
                      "cg_steps": float(np.mean(cg_steps)),
                      "peak_rss": peak_rss_mib(), "step_mem": peak_rss_mib() - before,
                      "rss_before": before}), flush=True)


def hvp_worker(repeats):
    """Time of one Hessian-vector product (marginal cost in a chain of dependent products)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from pymeta import hvp
    from pymeta.inner_loop import FunctionalModel
    from pymeta.networks import make_omniglot_cnn_model

    keras.utils.set_random_seed(0)
    model = make_omniglot_cnn_model(5)
    fm = FunctionalModel(model, "sparse_categorical_crossentropy")
    x = tf.constant(np.random.rand(25, 28, 28, 1).astype(np.float32))
    y = tf.constant(np.repeat(np.arange(5), 5))
    params, state = fm.read_params(), fm.read_state()

    def chain(method, n, while_loop):
        @tf.function
        def run(p):
            H = hvp.training_loss_hessian(fm, p, state, x, y, method)
            v = list(H.gradient)

            def body(k, v):
                hv = H(v)
                norm = hvp.vnorm(hv)
                return k + 1, [t / norm for t in hv]

            if while_loop:
                return tf.while_loop(lambda k, v: k < n, body, (tf.constant(0), v))[1]
            for _ in range(n):
                v = body(0, v)[1]
            return v
        return run

    rows = []
    for method in hvp.HVP_METHODS:
        for while_loop in (False, True):
            fns = {n: chain(method, n, while_loop) for n in (1, 6)}
            for f in fns.values():
                f(params)
            best = {n: float("inf") for n in fns}
            for _ in range(repeats):
                for n, f in fns.items():
                    t0 = time.perf_counter()
                    [t.numpy() for t in f(params)]
                    best[n] = min(best[n], time.perf_counter() - t0)
            rows.append({"method": method, "loop": "tf.while_loop" if while_loop else "unrolled",
                         "ms_per_hvp": (best[6] - best[1]) / 5 * 1000, "ms_1": best[1] * 1000})

    @tf.function
    def grad(p):
        return hvp.training_loss_hessian(fm, p, state, x, y, "reverse_over_reverse_recompute").gradient

    grad(params)
    g = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        [t.numpy() for t in grad(params)]
        g = min(g, time.perf_counter() - t0)
    print(json.dumps({"hvp": rows, "grad_ms": g * 1000}), flush=True)


def imaml_modes(iterations):
    """iMAML per inner mode, CG tolerance and precision next to FOMAML with the same inner loop."""
    print("Omniglot-shaped 5-way 1-shot, 15 query/class, 16 inner SGD(0.1) steps, meta-batch 5; iMAML "
          "lambda 2, 5 CG steps at most, cg_damping 1, lam_damping 10\n")
    print("| algorithm | precision | meta-it/s | x FOMAML's time | CG steps run (mean per task) |")
    print("|---|---|---|---|---|")
    for precision in ("float32", "mixed_bfloat16"):
        common = ("--iterations", iterations, "--shots", 1, "--precision", precision, "--inner-lr", 0.1)
        base = spawn("--worker", "FOMAML", 16, *common)
        print(f"| FOMAML | {precision} | {base['its']:.2f} | 1.00 | - |", flush=True)
        for algo in ("iMAML:pullback:1e-6", "iMAML:pullback:1e-2", "iMAML:proximal:1e-6"):
            r = spawn("--worker", algo, 16, *common)
            _, mode, tol = algo.split(":")
            print(f"| iMAML {mode}, cg_tol {tol} | {precision} | {r['its']:.2f} | {base['its'] / r['its']:.2f} | "
                  f"{r['cg_steps']:.2f} |", flush=True)


def spawn(*args):
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *map(str, args)], capture_output=True,
                         text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        raise RuntimeError(f"worker {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=5, help="timed meta-iterations per configuration")
    p.add_argument("--maml-steps", default="1,5,10,20", help="inner steps for the memory sweep")
    p.add_argument("--skip-hvp", action="store_true")
    p.add_argument("--hvp-repeats", type=int, default=7)
    p.add_argument("--imaml-modes", action="store_true",
                   help="only the iMAML table per inner mode, CG tolerance and precision (5-way 1-shot, "
                        "16 SGD(0.1) steps, as the iMAML issue measured), with FOMAML beside it")
    p.add_argument("--json-out", help="also write the meta-it/s rows to this JSON file "
                   "(benchmarks/compare_versions.py)")
    p.add_argument("--worker", nargs=2, metavar=("ALGO", "STEPS"), help=argparse.SUPPRESS)
    p.add_argument("--shots", type=int, default=5, help=argparse.SUPPRESS)
    p.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    p.add_argument("--inner-lr", type=float, default=0.01, help=argparse.SUPPRESS)
    p.add_argument("--hvp-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker[0], int(args.worker[1]), args.iterations, args.shots, args.precision,
                      args.inner_lr)
    if args.hvp_worker:
        return hvp_worker(args.hvp_repeats)

    import tensorflow as tf
    print(f"TensorFlow {tf.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPU(s); {args.iterations} timed meta-iterations per configuration\n")
    if args.imaml_modes:
        return imaml_modes(args.iterations)
    print("Omniglot-shaped: 28x28x1, 5-way 5-shot, 15 query/class, Omniglot CNN (64 filters), "
          "5 inner SGD steps, meta-batch 5, fast path, float32\n")
    print("| algorithm | meta-it/s | s / meta-it | tracing (s) | peak RSS (MiB) | step memory (MiB) |")
    print("|---|---|---|---|---|---|")
    rows = []

    def row(name, r):
        rows.append({"row": name, "unit": "meta-it/s", "values": [r["its"]], "cpu_s_per_it": r["cpu_s_per_it"]})

    for algo in ALGOS:
        r = spawn("--worker", algo, 5, "--iterations", args.iterations)
        row(f"{algo}, 5 inner steps", r)
        print(f"| {algo}{' (5 CG steps, lambda 2)' if algo == 'iMAML' else ''} | {r['its']:.2f} | "
              f"{1 / r['its']:.2f} | {r['warmup_s']:.1f} | {r['peak_rss']:.0f} | {r['step_mem']:.0f} |",
              flush=True)

    steps = [int(s) for s in args.maml_steps.split(",")]
    print("\nStep memory (MiB) and speed against the number of inner steps\n")
    print("| inner steps | MAML step memory | MAML meta-it/s | iMAML step memory | iMAML meta-it/s |")
    print("|---|---|---|---|---|")
    for t in steps:
        m = spawn("--worker", "MAML", t, "--iterations", max(2, args.iterations // 2))
        i = spawn("--worker", "iMAML", t, "--iterations", max(2, args.iterations // 2))
        row(f"MAML, {t} inner steps (memory sweep)", m)
        row(f"iMAML, {t} inner steps (memory sweep)", i)
        print(f"| {t} | {m['step_mem']:.0f} | {m['its']:.2f} | {i['step_mem']:.0f} | {i['its']:.2f} |",
              flush=True)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f)

    if not args.skip_hvp:
        r = spawn("--hvp-worker", "--hvp-repeats", args.hvp_repeats)
        print(f"\nHessian-vector products of the training loss (25 support images, Omniglot CNN); "
              f"one gradient: {r['grad_ms']:.1f} ms\n")
        print("| method | loop | ms per product (marginal) | 1 product incl. gradient (ms) |")
        print("|---|---|---|---|")
        for row in r["hvp"]:
            print(f"| {row['method']} | {row['loop']} | {row['ms_per_hvp']:.1f} | {row['ms_1']:.1f} |")


if __name__ == "__main__":
    main()
