"""Meta-test a saved model: mean accuracy (or MSE) after adaptation over many meta-test tasks,
with the 95% confidence interval papers report.

    python scripts/meta_test.py --model saved/model.h5 --dataset omniglot \
        --num_output_classes 5 --num_train_samples_per_class 1 --num_test_samples_per_class 15 \
        --metamodel fomaml --inner_lr 0.1 --num_inner_iterations 10 --num_tasks 1000

The inner loop at test time is the one of meta-training (same inner optimizer and learning rate);
papers usually adapt with more steps at test time than during training (`--num_inner_iterations`).
A model trained with `--persistent_inner_state` carries its inner optimizer state in the .h5 file:
every test task starts from that state, as the original Reptile evaluation did (`--fresh_inner_state`
starts from zero instead).
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pymeta.experiment import DATASETS, METAMODELS  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="the .h5/.keras file written by example_metatrain.py")
    p.add_argument("--dataset", choices=DATASETS, default="omniglot")
    p.add_argument("--data_path", default="", help="dataset file (default datasets/<dataset>/<dataset>.pkl)")
    p.add_argument("--omniglot_protocol", choices=["standard", "allcharacters"], default="standard")
    p.add_argument("--metamodel", choices=METAMODELS, default="fomaml",
                   help="chooses the inner optimizer as in training (Adam(beta_1=0) for reptile)")
    p.add_argument("--num_output_classes", type=int, default=5)
    p.add_argument("--num_train_samples_per_class", type=int, default=1)
    p.add_argument("--num_test_samples_per_class", type=int, default=15)
    p.add_argument("--inner_lr", type=float, default=0.01)
    p.add_argument("--inner_optimizer", choices=["auto", "sgd", "adam"], default="auto",
                   help="auto: as example_metatrain.py (Adam(beta_1=0) for reptile, SGD otherwise)")
    p.add_argument("--imaml_lambda_reg", type=float, default=2.0,
                   help="--metamodel imaml: adapt on loss + (lambda/2)||phi - theta||^2 as in training "
                        "(0: plain adaptation)")
    p.add_argument("--fresh_inner_state", action="store_true",
                   help="ignore an inner optimizer state saved with the model (start each task fresh)")
    p.add_argument("--num_inner_iterations", type=int, default=10)
    p.add_argument("--inner_batch_size", type=int, default=-1, help="-1: the whole support set")
    p.add_argument("--num_tasks", type=int, default=1000, help="meta-test tasks (>= 600 for a paper table)")
    p.add_argument("--batch", type=int, default=25, help="tasks per compiled call")
    p.add_argument("--notransductive", action="store_true",
                   help="batch norm with the support set's statistics (each query example on its own)")
    p.add_argument("--split", choices=["test", "val"], default="test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=["float32", "mixed_bfloat16"], default="float32")
    p.add_argument("--output", default="", help="also write the result as JSON here")
    return p.parse_args(argv)


def meta_test(args, log=print):
    """Returns {'mean': ..., 'ci95': ..., ...}: accuracy (%) for classification, MSE for sinusoid."""
    import keras
    import numpy as np
    from tqdm import tqdm

    from pymeta.experiment import (RunConfig, apply_thread_layout, build_metalearner, mean_confidence_interval,
                                   seeded_problem_and_model, thread_layout)
    from pymeta.model_io import load_inner_state, load_weights_into
    if args.num_tasks < 2:
        raise ValueError(f"--num_tasks must be >= 2 for a confidence interval, got {args.num_tasks}")
    # the tasks of a compiled batch run side by side, as in training (default layout of example_metatrain)
    apply_thread_layout(*thread_layout(RunConfig(dataset=args.dataset, meta_batch_size=args.batch)),
                        explicit=False)
    problem, model = seeded_problem_and_model(
        args.seed, args.precision, args.dataset, args.metamodel, args.inner_lr, args.num_output_classes,
        args.num_train_samples_per_class, args.num_test_samples_per_class, args.batch,
        args.data_path or None, args.omniglot_protocol, inner_optimizer=args.inner_optimizer)
    load_weights_into(model, args.model)
    if args.imaml_lambda_reg < 0:
        raise ValueError(f"--imaml_lambda_reg must be >= 0, got {args.imaml_lambda_reg}")
    # evaluation only: the meta-learner just supplies the inner objective (iMAML's is proximal)
    imaml = args.metamodel == "imaml" and args.imaml_lambda_reg > 0
    kept = None if args.fresh_inner_state else load_inner_state(args.model)
    metalearner = build_metalearner("imaml" if imaml else "fomaml", model, keras.optimizers.SGD(0.0),
                                    imaml_lambda_reg=args.imaml_lambda_reg,
                                    persistent_inner_state=kept is not None)
    metalearner.initialize()
    if kept is not None:
        store = metalearner.inner_state
        if not store.fits(kept):
            raise ValueError(f"the inner optimizer state in {args.model!r} does not fit --inner_optimizer="
                             f"{args.inner_optimizer} (train with the same inner optimizer, or "
                             "--fresh_inner_state)")
        store.write(kept)  # flat arrays, in the order of store.variables
    dist = problem.metatest if args.split == "test" else problem.metaval
    losses, accs = [], []
    start = time.time()
    with tqdm(total=args.num_tasks, unit="task", disable=not sys.stderr.isatty()) as bar:
        while len(losses) < args.num_tasks:
            n = min(args.batch, args.num_tasks - len(losses))
            l, a = metalearner.evaluate_tasks(dist.sample_batch(n), args.num_inner_iterations,
                                              args.inner_batch_size, not args.notransductive)
            losses.extend(l)
            accs.extend(a)
            bar.update(n)
    values = np.asarray(accs) * 100 if problem.is_classification else np.asarray(losses)
    mean, ci = mean_confidence_interval(values)
    result = {"metric": "accuracy_percent" if problem.is_classification else "mse", "mean": mean, "ci95": ci,
              "num_tasks": len(values), "num_inner_iterations": args.num_inner_iterations,
              "transductive": not args.notransductive, "seconds": round(time.time() - start, 1),
              "model": args.model, "dataset": args.dataset, "split": args.split,
              "way": args.num_output_classes, "shot": args.num_train_samples_per_class,
              "inner_objective": f"proximal (lambda {args.imaml_lambda_reg})" if imaml else "task loss",
              "inner_optimizer_state": "saved with the model" if kept is not None else "fresh per task"}
    unit = "%" if problem.is_classification else ""
    log(f"{args.dataset} {args.split}: {mean:.2f}{unit} ± {ci:.2f}{unit} (95% CI) over {len(values)} tasks, "
        f"{args.num_inner_iterations} inner steps, {'transductive' if result['transductive'] else 'non-transductive'}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)
    return result


def main(argv=None):
    args = parse_args(argv)
    try:
        meta_test(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
