"""Meta-iterations per second of the MPI outer loop with 1 and 2 ranks (pymeta.metalearners.distributed).

Omniglot-shaped configuration: 28x28x1 inputs (synthetic uint8 images: the speed does not depend on
the pixels), 5-way 5-shot with 15 query examples per class, `make_omniglot_cnn_model(5)` (Conv-4, 64
filters), 5 inner SGD steps (lr 0.01, whole support set), meta-batch 10, outer Adam 1e-3 (FOMAML) /
SGD 1.0 (Reptile). Each rank runs TensorFlow on 1 thread, pinned to its own core.

    python benchmarks/bench_mpi.py                       # runs mpiexec -n 1 and -n 2, prints a table
    python benchmarks/bench_mpi.py --ranks 1 2 4 --algos fomaml reptile --iters 10

Scaling efficiency = (it/s on P ranks) / (P x it/s on 1 rank). With 10 tasks on 2 ranks each rank
adapts to 5 tasks, so the ideal is 2x; the rest is the Allreduce (including waiting for the slower
rank) and the per-iteration work every rank repeats (drawing the meta-batch, the outer step).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def worker(args):
    rank = int(os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0")))
    pinned = None
    if args.pin and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        pinned = cpus[rank % len(cpus)]
        os.sched_setaffinity(0, {pinned})  # before TF starts its threads
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras
    import numpy as np

    from pymeta.core.task import ClassificationTask
    from pymeta.core.task_distribution import TaskDistribution
    from pymeta.metalearners import FOMAMLMetaLearner, ReptileMetaLearner
    from pymeta.metalearners.distributed import DistributedMetaLearner
    from pymeta.mpi import mpi_abort_on_exception, seed_everything
    from pymeta.networks import make_omniglot_cnn_model

    mpi_abort_on_exception()
    seed_everything(0)
    n_classes, per_class = 100, 20
    X = np.random.randint(0, 256, (n_classes * per_class, 28, 28, 1)).astype(np.uint8)
    y = np.repeat(np.arange(n_classes), per_class)
    task = ClassificationTask(X, y, num_training_samples_per_class=5, num_test_samples_per_class=15,
                              num_training_classes=5, split_train_test=-1)
    dist = TaskDistribution([task], [1.0], batch_size=args.meta_batch)
    model = make_omniglot_cnn_model(5, filters=args.filters)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    if args.algo == "fomaml":
        dml = DistributedMetaLearner(FOMAMLMetaLearner(model, keras.optimizers.Adam(1e-3)))
    else:
        dml = DistributedMetaLearner(ReptileMetaLearner(model, keras.optimizers.SGD(1.0)))
    dml.initialize()
    comm = dml.comm

    def iterate(n):
        for _ in range(n):
            dml.metatrain_step(dist.sample_batch(args.meta_batch), args.inner_steps, -1)

    iterate(args.warmup)  # tracing and compiling
    for key in ("compute_seconds", "allreduce_seconds"):
        dml.stats[key] = 0.0
    if comm is not None:
        comm.Barrier()
    start, cpu = time.perf_counter(), time.process_time()
    iterate(args.iters)
    cpu = (time.process_time() - cpu) / args.iters  # this rank's CPU seconds (all its threads) per iteration
    if comm is not None:
        comm.Barrier()
    seconds = time.perf_counter() - start
    digest = dml.check_sync()  # raises if the ranks' parameters differ
    stats = {**dml.stats, "cpu_s_per_it": cpu}
    stats = stats if comm is None else comm.gather(stats, root=0)
    if dml.rank == 0:
        stats = stats if isinstance(stats, list) else [stats]
        num_params = sum(int(np.prod(v.shape)) for v in dml.meta_variables)
        import pymeta
        with open(args.out, "w") as f:
            json.dump({"pymeta": os.path.dirname(os.path.dirname(os.path.abspath(pymeta.__file__))),
                       "ranks": dml.size, "algo": args.algo, "iters": args.iters, "seconds": seconds,
                       "its_per_s": args.iters / seconds, "pinned_cpu_rank0": pinned,
                       "compute_s_per_it": [s["compute_seconds"] / args.iters for s in stats],
                       "allreduce_s_per_it": [s["allreduce_seconds"] / args.iters for s in stats],
                       "cpu_s_per_it": [s["cpu_s_per_it"] for s in stats],
                       "num_params": num_params, "digest": digest, "in_sync": True}, f)


def launch(args):
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        sys.exit("mpiexec not found: pip install -e .[mpi]")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "PMIX_", "OMPI_", "HYDRA_", "MPI_LOCAL", "MV2_"))}
    # a PYTHONPATH given wins over this checkout (benchmarks/compare_versions.py runs this script on another version)
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (env.get("PYTHONPATH"), REPO) if p))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for algo in args.algos:
            for n in args.ranks:
                out = os.path.join(tmp, f"{algo}_{n}.json")
                cmd = [mpiexec, "-n", str(n), sys.executable, os.path.abspath(__file__), "--worker",
                       "--algo", algo, "--out", out, "--iters", str(args.iters), "--warmup", str(args.warmup),
                       "--meta-batch", str(args.meta_batch), "--inner-steps", str(args.inner_steps),
                       "--filters", str(args.filters)] + ([] if args.pin else ["--no-pin"])
                print(f"running {algo} on {n} rank(s) ...", file=sys.stderr, flush=True)
                subprocess.run(cmd, check=True, env=env, cwd=REPO, timeout=args.timeout)
                with open(out) as f:
                    rows.append(json.load(f))
    print_table(rows, args)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump([{"row": f"{r['algo']} on {r['ranks']} rank(s)", "unit": "meta-it/s",
                        "values": [r["its_per_s"]], "cpu_s_per_it": sum(r["cpu_s_per_it"]),  # all ranks
                        "pymeta": r["pymeta"]} for r in rows], f)


def print_table(rows, args):
    print(f"\nOmniglot-shaped FOMAML/Reptile, 28x28x1, 5-way 5-shot (15 query/class), Conv-4 "
          f"{args.filters} filters ({rows[0]['num_params']} parameters), {args.inner_steps} inner SGD steps, "
          f"meta-batch {args.meta_batch}, {args.iters} timed iterations, 1 TF thread per rank, "
          f"{'pinned to one core each' if args.pin else 'not pinned'}, {os.cpu_count()} cores\n")
    print("| algorithm | ranks | meta-it/s | s/meta-it | speed-up | scaling efficiency "
          "| compute s/it (per rank) | Allreduce ms/it (per rank) | ranks bit-identical |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = {}
    for r in rows:
        if r["ranks"] == 1:
            base[r["algo"]] = r["its_per_s"]
    for r in rows:
        b = base.get(r["algo"])
        speedup = r["its_per_s"] / b if b else float("nan")
        compute = " / ".join(f"{c:.2f}" for c in r["compute_s_per_it"])
        comm = " / ".join(f"{1000 * c:.1f}" for c in r["allreduce_s_per_it"])
        print(f"| {r['algo']} | {r['ranks']} | {r['its_per_s']:.3f} | {1 / r['its_per_s']:.2f} | "
              f"{speedup:.2f}x | {100 * speedup / r['ranks']:.0f}% | {compute} | {comm} | "
              f"{'yes' if r['in_sync'] else 'NO'} |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--algos", nargs="+", default=["fomaml", "reptile"], choices=["fomaml", "reptile"])
    p.add_argument("--iters", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--meta-batch", type=int, default=10)
    p.add_argument("--inner-steps", type=int, default=5)
    p.add_argument("--filters", type=int, default=64)
    p.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin each rank to a core")
    p.add_argument("--timeout", type=float, default=900, help="seconds per mpiexec run")
    p.add_argument("--json-out", help="also write the rows to this JSON file (benchmarks/compare_versions.py)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--algo", default="fomaml", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
    else:
        launch(args)


if __name__ == "__main__":
    main()
