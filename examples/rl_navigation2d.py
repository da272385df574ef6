"""Meta-train a policy on 2D navigation (the MAML paper's point robot) and print the mean return per
episode after 0, 1, 2, 3 adaptation steps on fixed test tasks, before and after meta-training.

    python examples/rl_navigation2d.py --iterations 20 --metamodel maml --save runs/nav2d_maml/model.h5

Defaults are the paper's settings (20 tasks x 20 episodes x 100 steps, one inner step of lr 0.5,
TRPO outer step for MAML). The adaptation steps of the evaluation all use the inner lr (the paper's
evaluation used lr, then lr / 2 for later steps: `scripts/meta_test.py` does that). The command line,
with checkpoints, resume and TensorBoard: `python example_metatrain.py --dataset=navigation2d`.
"""

import argparse
import copy
import logging
import os
import sys
import time

import numpy as np

from pymeta.atomic import write_json_atomic
from pymeta.model_io import save_model
from pymeta.rl import adaptation_returns, build_problem


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--metamodel", default="maml", choices=["maml", "fomaml", "reptile"])
    parser.add_argument("--outer_optimizer", default=None, choices=["trpo", "adam"])
    parser.add_argument("--meta_lr", type=float, default=0.01)
    parser.add_argument("--inner_lr", type=float, default=None)
    parser.add_argument("--meta_batch_size", type=int, default=None)
    parser.add_argument("--episodes_per_task", type=int, default=20)
    parser.add_argument("--num_test_tasks", type=int, default=40)
    parser.add_argument("--adaptation_steps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", default="", help="model file (.h5): written every --save_every iterations "
                        "and at the end, with <model>_history.json (per-iteration returns, test returns)")
    parser.add_argument("--save_every", type=int, default=10)
    parser.add_argument("--load", default="", help="start from the weights of this model file (with "
                        "--iterations 0: only evaluate it)")
    parser.add_argument("--output", default="", help="write the final test returns to this JSON file")
    parser.add_argument("--max_minutes", type=float, default=0.0,
                        help="stop after this many minutes of meta-training (0: run all --iterations)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    np.random.seed(args.seed)
    problem = build_problem("navigation2d", args.metamodel, args.outer_optimizer, args.inner_lr, args.meta_lr,
                            args.meta_batch_size, args.episodes_per_task, seed=args.seed)
    ml, dist, e = problem.metalearner, problem.distribution, args.episodes_per_task
    print("settings:", problem.settings)
    test_tasks = dist.sample_batch(args.num_test_tasks)

    history = {"settings": {k: v for k, v in problem.settings.items() if isinstance(v, (int, float, str))},
               "command": " ".join(sys.argv), "iterations": [], "test": []}

    def report(label):
        returns = adaptation_returns(ml, copy.deepcopy(test_tasks), args.adaptation_steps, e)
        print(f"{label}: mean return after 0..{args.adaptation_steps} steps: "
              + "  ".join(f"{r:.1f}" for r in returns))
        history["test"].append({"label": label, "returns_by_step": [float(r) for r in returns]})

    def save():
        if args.save:
            save_model(problem.model, args.save)
            write_json_atomic(os.path.splitext(args.save)[0] + "_history.json", history)

    if args.load:
        from pymeta.model_io import load_weights_into
        load_weights_into(problem.model, args.load)
        ml.initialize()  # theta <- the loaded weights
    report(f"start ({'loaded ' + args.load if args.load else 'random initialisation'})")
    times = []
    begin = time.perf_counter()
    for it in range(args.iterations):
        tasks = dist.sample_batch()
        start = time.perf_counter()
        out = ml.metatrain_step(tasks, 1, e)
        times.append(time.perf_counter() - start)
        before = np.mean([t.last_stats["mean_return_before"] for t in tasks])
        after = np.mean([t.last_stats["mean_return"] for t in tasks])
        extra = "  ".join(f"{k} {v:.4g}" for k, v in out.items())
        print(f"iteration {it + 1}: {times[-1]:.2f} s  return before {before:.1f} after {after:.1f}  {extra}",
              flush=True)
        history["iterations"].append({"iteration": it + 1, "seconds": round(time.perf_counter() - begin, 1),
                                      "return_before": float(before), "return_after": float(after),
                                      **{k: float(v) for k, v in out.items()}})
        if (it + 1) % args.save_every == 0:
            save()
        if args.max_minutes and time.perf_counter() - begin > 60 * args.max_minutes:
            print(f"stopping after {it + 1} meta-iterations (--max_minutes {args.max_minutes})")
            break
    if len(times) > 1:
        print(f"seconds per meta-iteration (after the first, which compiles): {np.median(times[1:]):.2f}")
    if history["iterations"]:
        report(f"after {len(history['iterations'])} meta-iterations")
    save()
    if args.output:
        write_json_atomic(args.output, {"returns_by_step": history["test"][-1]["returns_by_step"],
                                        "num_tasks": args.num_test_tasks, "episodes_per_task": e,
                                        "model": args.load or args.save, "command": " ".join(sys.argv)})


if __name__ == "__main__":
    main()
