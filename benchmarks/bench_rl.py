"""RL speed in one run: bare simulation vs pymeta's sampler (env-steps/s) on 2D navigation and
HalfCheetah, and the time of one meta-iteration at the paper's settings, collected before and after one
adaptation step: 2D navigation (20 tasks x 20 episodes x 100 steps) and, unless --no_mujoco,
HalfCheetah-dir with MAML-TRPO (40 tasks x 20 episodes x 200 steps).

    PYTHONPATH=. python benchmarks/bench_rl.py [--no_mujoco] [--vectorization async] [--layout default]
    mpiexec -n 2 python benchmarks/bench_rl.py     # the MAML-TRPO rows with the tasks split over 2 ranks

One process runs under one TensorFlow thread layout (fixed at start-up): by default the one an RL
training run on several cores uses (`pymeta.runtime.thread_layout`: one thread per op, as many tasks of
the meta-batch at once as there are cores); `--layout default` gives TensorFlow's own (all cores per op).
"""

import argparse
import json
import time

import numpy as np

from pymeta import mpi
from pymeta.rl import Agent, build_problem, make_gaussian_policy, navigation2d
from pymeta.rl.navigation import Navigation2DEnv
from pymeta.rl.task import collect
from pymeta.rl.trpo import TRPO_HVP_METHODS
from pymeta.config import RunConfig
from pymeta.runtime import apply_thread_layout, thread_layout

# the 2D-navigation training run whose thread layout the benchmark takes (`pymeta.runtime.thread_layout`)
TRAINING_RUN = RunConfig(dataset="navigation2d", metamodel="maml", meta_batch_size=20)
# thread layouts (intra-op threads, inter-op threads), 0 = TensorFlow's default (all cores)
# (compare_versions.py also runs this script on versions before RunConfig.sections(), whose
# thread_layout took the flat config)
_LAYOUT_ARGS = ((lambda s: (s.run, s.task, s.algorithm))(TRAINING_RUN.sections())
                if hasattr(TRAINING_RUN, "sections") else (TRAINING_RUN,))
LAYOUTS = {"task-parallel": thread_layout(*_LAYOUT_ARGS), "default": (0, 0)}


def sampler_rate(tasks, agent, episodes, repeats=2):
    collect(tasks, agent, episodes)  # compile, build the environments
    best = min(_timed(lambda: collect(tasks, agent, episodes)) for _ in range(repeats))
    return len(tasks) * episodes * tasks[0].horizon / best


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no_mujoco", action="store_true")
    parser.add_argument("--vectorization", default="sync", choices=["sync", "async"])
    parser.add_argument("--meta_iterations", type=int, default=3, help="timed 2D-navigation meta-iterations per row")
    parser.add_argument("--halfcheetah_meta_iterations", type=int, default=2,
                        help="timed HalfCheetah-dir MAML-TRPO meta-iterations (about 20-45 s each on 2 cores; "
                             "0: no such row)")
    parser.add_argument("--trpo_hvp", nargs="+", default=list(TRPO_HVP_METHODS[:2]), choices=TRPO_HVP_METHODS,
                        help="the MAML-TRPO rows: how CG's KL Hessian-vector products are computed")
    parser.add_argument("--layout", default="task-parallel", choices=list(LAYOUTS),
                        help="TensorFlow's thread layout in one process (see the module doc; not under MPI)")
    parser.add_argument("--json-out", help="also write the rows to this JSON file (benchmarks/compare_versions.py)")
    args = parser.parse_args()
    share = None
    if not mpi.is_mpi_run():
        apply_thread_layout(*LAYOUTS[args.layout])
        print(f"thread layout {args.layout}: (intra-op, inter-op) threads {LAYOUTS[args.layout]}", flush=True)
    else:  # only the MAML-TRPO rows, each rank with its share of the 20 tasks
        from pymeta.rl.training import MPIShare
        apply_thread_layout(*thread_layout(*_LAYOUT_ARGS, distributed=True))  # cores / ranks each
        share = MPIShare()
    np.random.seed(0 if share is None else share.rank)
    rows = []
    if share is None:
        sampler_rows(args, rows)
    meta_iteration_rows(args, share, rows)
    if args.json_out and (share is None or share.is_root):
        with open(args.json_out, "w") as f:
            json.dump(rows, f)


def sampler_rows(args, rows):
    tasks = navigation2d(20).sample_batch()
    env = Navigation2DEnv(np.zeros((400, 2)))
    env.reset()
    bare = 400 * 100 / _timed(lambda: [env.step(np.random.uniform(-0.1, 0.1, (400, 2))) for _ in range(100)])
    rate = sampler_rate(tasks, Agent(make_gaussian_policy(2, 2), Navigation2DEnv.action_space), 20)
    print(f"navigation2d 400 envs: bare {bare:,.0f} env-steps/s, sampler {rate:,.0f} env-steps/s")
    rows.append({"row": "navigation2d sampler, 20 tasks x 20 episodes", "unit": "env-steps/s", "values": [rate]})

    if not args.no_mujoco:
        from pymeta.rl.gym_tasks import GymBatchedEnv, halfcheetah_dir
        hc = halfcheetah_dir(40, vectorization=args.vectorization).sample_batch()
        benv = GymBatchedEnv(hc, 20)
        benv.reset()
        bare = 800 * 50 / _timed(lambda: [benv.step(np.random.uniform(-1, 1, (800, 6)).astype(np.float32))
                                          for _ in range(50)])
        rate = sampler_rate(hc, Agent(make_gaussian_policy(17, 6), hc[0].action_space), 20, repeats=1)
        print(f"halfcheetah_dir 40 tasks x 20 envs ({args.vectorization}): bare {bare:,.0f} env-steps/s, "
              f"sampler {rate:,.0f} env-steps/s (ratio {bare / rate:.2f})")
        rows.append({"row": f"halfcheetah_dir sampler, 40 tasks x 20 envs ({args.vectorization})",
                     "unit": "env-steps/s", "values": [rate]})


def meta_iteration_rows(args, share, rows):
    runs = [("fomaml", "adam", None), ("maml", "adam", None)] if share is None else []
    runs += [("maml", "trpo", h) for h in args.trpo_hvp]
    for metamodel, outer, hvp in runs:
        meta_iteration_row("navigation2d", metamodel, outer, hvp, args.meta_iterations, share, rows)
    if not args.no_mujoco and args.halfcheetah_meta_iterations > 0:
        meta_iteration_row("halfcheetah_dir", "maml", "trpo", "gauss_newton", args.halfcheetah_meta_iterations,
                           share, rows, vectorization=args.vectorization)


def meta_iteration_row(dataset, metamodel, outer, hvp, iterations, share, rows, **problem_kwargs):
    """Print the best of `iterations` timed meta-iterations (after one that compiles) at the dataset's
    defaults (the paper's settings); under MPI, each rank with its share of the tasks. Appends to `rows`
    every timed iteration's seconds and this process's CPU seconds (all its threads) per iteration."""
    p = build_problem(dataset, metamodel, outer, seed=0, **problem_kwargs)
    dist, ml, s = p.distribution, p.metalearner, p.settings
    if hvp is not None:
        ml.hvp = hvp  # before the first call traces the TRPO step
    count, episodes = s["meta_batch_size"], s["episodes_per_task"]
    if share is not None:  # this rank's tasks; TRPO's means combined by Allreduces
        ml.collectives = share.collectives
        count = share.local_count(s["meta_batch_size"])
    ml.metatrain_step(dist.sample_batch(count), 1, episodes)  # compiles
    times, parts = [], []
    cpu = time.process_time()
    for _ in range(iterations):
        times.append(_timed(lambda: parts.append(ml.metatrain_step(dist.sample_batch(count), 1, episodes))))
    cpu = (time.process_time() - cpu) / iterations
    if share is not None:  # the slowest rank's time
        times = [share.collectives.allreduce_max(t) for t in times]
        if not share.is_root:
            return
    best = int(np.argmin(times))
    name = f"{metamodel}-{outer}" + (f" (KL HVPs: {hvp})" if hvp else "")
    if share is not None:
        name += f" on {share.size} MPI ranks"
    split = ""
    if hvp is not None:
        b = parts[best]
        split = (f"  [collect {b['seconds_collect']:.2f} s, gradient + CG {b['seconds_direction']:.2f} s, "
                 f"line search {b['seconds_line_search']:.2f} s]")
    shape = f"{s['meta_batch_size']} x {episodes} x {s['horizon']}"
    print(f"{dataset} meta-iteration {name} ({shape}, 1 inner step): {times[best]:.2f} s{split}", flush=True)
    rows.append({"row": f"{dataset} meta-iteration {name}", "unit": "s/meta-it", "values": times,
                 "cpu_s_per_it": cpu})


if __name__ == "__main__":
    main()
