"""Record per-task meta-test values of two committed models with the code of commit fc4f70a (pymeta
before the consolidation of issue #35), for tests/test_metatest_reference.py to re-measure with the
current code. Run it with THAT commit's pymeta on the path (it uses that version's API):

    git worktree add /tmp/pymeta-fc4f70a fc4f70a
    cd /tmp/pymeta-fc4f70a && PYTHONPATH=$PWD python /path/to/tests/data/metatest_reference/make_reference.py \
        --omniglot_dir /path/to/omniglot --out /path/to/tests/data/metatest_reference/reference.json
    git worktree remove /tmp/pymeta-fc4f70a

(the working directory is that commit's checkout: its pretrained/ files, flat then, are the ones now under
pretrained/omniglot/ and pretrained/rl/navigation2d/, byte for byte; the JSON records their SHA-256).
The Omniglot file is built from the PNGs by that commit's scripts/make_omniglot_dataset.py (--size 28).

Supervised: that version's `pymeta.evaluation.meta_test`, unchanged, with the flags below (the rest from
the model file, as `pymeta-metatest` reads them); its per-task values are recorded by wrapping
`GradBasedMetaLearner.evaluate_tasks` (the losses) and `mean_confidence_interval` (the accuracies, in
percent, exactly as that version computed them): that version's JSON kept only the mean. RL: that version's
`meta_test_rl` through the same entry point; its JSON had the per-task returns already.
"""

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile

OMNIGLOT_MODEL = "pretrained/omniglot_fomaml_5w1s.h5"  # now pretrained/omniglot/
RL_MODEL = "pretrained/navigation2d_maml.h5"  # now pretrained/rl/navigation2d/
# the zoo rows' protocols (pretrained/index.json), on a few tasks
OMNIGLOT_FLAGS = ["--dataset=omniglot", "--num_output_classes=5", "--num_train_samples_per_class=1",
                  "--num_test_samples_per_class=15", "--num_inner_iterations=20", "--num_tasks=10", "--seed=0",
                  "--transductive", "--split=test"]
RL_FLAGS = ["--dataset=navigation2d", "--num_tasks=4", "--num_inner_iterations=3", "--seed=0",
            "--episodes_per_task=40", "--step_sizes=0.5,0.25,0.25"]


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def supervised(data_path):
    import pymeta.evaluation
    from pymeta.cli.metatest import parse_args
    from pymeta.core.meta_learner import GradBasedMetaLearner
    losses, values = [], []
    evaluate_tasks, confidence = GradBasedMetaLearner.evaluate_tasks, pymeta.evaluation.mean_confidence_interval

    def recording_evaluate_tasks(self, *args, **kwargs):
        l, a = evaluate_tasks(self, *args, **kwargs)
        losses.extend(l.tolist())
        return l, a

    def recording_confidence(v, *args, **kwargs):  # the per-task values the mean is taken of
        values.extend(v.tolist())
        return confidence(v, *args, **kwargs)

    GradBasedMetaLearner.evaluate_tasks = recording_evaluate_tasks
    pymeta.evaluation.mean_confidence_interval = recording_confidence
    try:
        flags = ["--model", OMNIGLOT_MODEL, "--data_path", data_path, *OMNIGLOT_FLAGS]
        result = pymeta.evaluation.meta_test(parse_args(flags))
    finally:
        GradBasedMetaLearner.evaluate_tasks = evaluate_tasks
        pymeta.evaluation.mean_confidence_interval = confidence
    assert len(values) == len(losses) == result["num_tasks"], (len(values), len(losses), result["num_tasks"])
    return {"model": OMNIGLOT_MODEL, "model_sha256": sha256(OMNIGLOT_MODEL), "flags": OMNIGLOT_FLAGS,
            "metric": result["metric"], "mean": result["mean"], "values_by_task": values, "loss_by_task": losses}


def rl():
    from pymeta.cli.metatest import parse_args
    from pymeta.evaluation import meta_test
    result = meta_test(parse_args(["--model", RL_MODEL, *RL_FLAGS]))
    return {"model": RL_MODEL, "model_sha256": sha256(RL_MODEL), "flags": RL_FLAGS,
            "returns_by_step": result["returns_by_step"], "returns_by_task": result["returns_by_task"],
            "task_params": result["task_params"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--omniglot_dir", required=True, help="images_background/ and images_evaluation/")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import logging
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        data_path = os.path.join(tmp, "omniglot.pkl")
        subprocess.run([sys.executable, "scripts/make_omniglot_dataset.py", "-i", args.omniglot_dir, "-o", data_path,
                        "--size", "28", "-q"], check=True)
        omniglot = supervised(data_path)
    reference = {"description": "per-task meta-test values of committed models, measured with the code of "
                                "commit fc4f70a (before the #35 consolidation) by make_reference.py beside "
                                "this file (its docstring has the commands); tests/test_metatest_reference.py "
                                "re-measures them with the current code",
                 "commit": commit, "command": "cd <checkout of fc4f70a> && PYTHONPATH=$PWD python <this repository>/"
                 "tests/data/metatest_reference/make_reference.py --omniglot_dir <omniglot> --out <this file>",
                 "machine": machine(),
                 "omniglot": omniglot, "navigation2d": rl()}
    with open(args.out, "w") as f:
        json.dump(reference, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out}")


SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")


def machine():
    """What the float rounding of TensorFlow's CPU kernels depends on: the CPU model and its vector
    instructions, the TensorFlow version (tests/test_metatest_reference.py compares on the same kind)."""
    import tensorflow as tf
    model, flags = platform.processor(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return {"cpu": model, "cpu_flags": [f for f in SIMD_FLAGS if f in flags], "tensorflow": tf.__version__}


if __name__ == "__main__":
    main()
