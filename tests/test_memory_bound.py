"""Sizes with no bound (issue #38, item 2): the memory a run's batches need is estimated from its settings
before anything is allocated (`pymeta.config.memory`), and what cannot fit is refused with one line
naming the flags and the estimate (exit 2 from the command line, before TensorFlow is imported); a
--horizon above its declared maximum is refused too. The estimate's batches are checked against the
nbytes of the arrays tiny runs really build, its activation model against the networks' layers, its
mirrored constants against their sources; the usual runs of the README still pass."""

import dataclasses
import inspect
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from conftest import REPO
from pymeta.config import MetaTestConfig, RunConfig, check_config, check_metatest_config, resolve_rl_defaults
from pymeta.config import memory
from pymeta.config.memory import MAX_HORIZON, check_memory, estimate_memory

GiB = 2 ** 30


def nbytes(structure):
    """Total bytes of the numpy arrays in a nested structure of tuples / lists."""
    if isinstance(structure, np.ndarray):
        return structure.nbytes
    if structure is None:
        return 0
    return sum(nbytes(part) for part in structure)


# --- the estimate against what tiny runs build -----------------------------------------------------------
def test_supervised_batches_are_the_bytes_the_fast_path_stacks():
    """An Omniglot-shaped run (28x28x1 images, 3-way 2-shot, 4 queries, 3 inner steps on batches of 4,
    meta-batch 2): the estimate's batch is the nbytes of the `TaskData` `stack_tasks` builds, and it
    scales linearly to a meta-batch of 2000."""
    from pymeta.core.meta_learner import stack_tasks
    from pymeta.core.task import ClassificationTask
    from pymeta.core.task_distribution import TaskDistribution
    np.random.seed(0)
    X = np.random.randint(0, 256, (10 * 20, 28, 28, 1), dtype=np.uint8)
    y = np.repeat(np.arange(10), 20)
    dist = TaskDistribution([ClassificationTask(X, y, 2, 4, 3, split_train_test=-1)], [1.0], batch_size=2)
    actual = nbytes(stack_tasks(dist.sample_batch(), 3, 4))
    c = RunConfig(dataset="omniglot", num_output_classes=3, num_train_samples_per_class=2,
                  num_test_samples_per_class=4, num_inner_training_iterations=3, inner_batch_size=4,
                  meta_batch_size=2)
    assert estimate_memory(c).batch_bytes == actual
    big = estimate_memory(dataclasses.replace(c, meta_batch_size=2000))
    assert big.batch_bytes == 1000 * actual
    assert big.parts["batches"] == memory.DATA_COPIES * 1000 * actual


def test_sinusoid_batches_count_every_meta_batch_of_a_call():
    """Sinusoid's default compiled call holds 10 meta-batches (--iterations_per_call=0): the estimate is
    the nbytes of the 10 stacked meta-batches `metatrain_steps` builds (x and y [n, 1] float32)."""
    from pymeta.core.meta_learner import stack_tasks
    from pymeta.core.task_data import stack_task_data
    from pymeta.tasks.sinusoid_tasks import create_sinusoid_task_distribution
    np.random.seed(0)
    dist = create_sinusoid_task_distribution(num_training_samples=10, num_test_samples=100, batch_size=5)[0]
    actual = nbytes(stack_task_data([stack_tasks(dist.sample_batch(), 5, 5) for _ in range(10)]))
    c = RunConfig(dataset="sinusoid", num_train_samples_per_class=10, num_test_samples_per_class=100,
                  num_inner_training_iterations=5, inner_batch_size=5, meta_batch_size=5)
    assert estimate_memory(c).batch_bytes == actual
    assert estimate_memory(dataclasses.replace(c, fast=False)).batch_bytes == actual // 10


@pytest.mark.parametrize("restart", [False, True])
def test_rl_batches_are_the_bytes_a_meta_batch_collects(restart):
    """A 2D-navigation meta-batch (2 tasks, 3 episodes of 5 steps, 1 inner step): the episodes and
    batches of its 2 collections (`adapt_and_collect`), each task's stacked inner batches and the
    meta-batch's `TaskData` (`meta_batch_task_data`) hold exactly the bytes the estimate counts; the
    estimate scales to 40 tasks x 20 episodes x 200 steps."""
    from pymeta.rl.problems import build_problem
    from pymeta.rl.task import adapt_and_collect
    problem = build_problem("navigation2d", "maml", meta_batch_size=2, episodes_per_task=3, horizon=5, seed=0,
                            restart_episodes=restart)
    tasks = problem.distribution.sample_batch()
    episodes, batches = adapt_and_collect(tasks, problem.metalearner, 1, 3)
    data = type(tasks[0]).meta_batch_task_data(tasks, problem.metalearner, 1, 3)
    actual = nbytes(episodes) + nbytes(batches) + nbytes(data) + sum(nbytes(t.last_fit.inner) for t in tasks)
    assert memory.rl_collections_bytes("navigation2d", 2, 3, 5, 1, restart, True) == actual
    c = RunConfig(dataset="navigation2d", metamodel="maml", meta_batch_size=2, episodes_per_task=3, horizon=5,
                  num_inner_training_iterations=1, num_validation_batches=1, restart_episodes=restart)
    assert estimate_memory(c).batch_bytes == actual
    scaled = memory.rl_collections_bytes("navigation2d", 40, 20, 200, 1, restart, True)
    assert scaled == actual * (40 * 20 * 200) // (2 * 3 * 5)


def test_the_activation_model_counts_the_networks_layers():
    """activations(dataset) is the sum of the Conv-4's layer outputs (input, conv, batch norm, pooling, ReLU,
    logits before and after the softmax) read off the Keras models of pymeta.networks."""
    from pymeta.networks import make_miniimagenet_cnn_model, make_omniglot_cnn_model
    for dataset, make in (("omniglot", make_omniglot_cnn_model), ("miniimagenet", make_miniimagenet_cnn_model)):
        model = make(5)
        sizes = [int(np.prod(layer.output.shape[1:])) for layer in model.layers
                 if type(layer).__name__ != "Flatten"]  # a reshape: no new tensor
        expected = sum(sizes) + 5  # + the logits before the softmax
        assert memory.activations(dataset, 5) == expected
        assert tuple(model.input.shape[1:]) == memory.IMAGE_SHAPES[dataset]


def test_mirrored_constants_agree_with_their_sources():
    """The values repeated in pymeta.config.memory (to keep TensorFlow out of the config checks)."""
    import gymnasium as gym

    from pymeta.networks import make_sinusoid_model
    from pymeta.rl import problems
    from pymeta.rl.evaluation import PROTOCOL_EPISODES
    from pymeta.rl.navigation import Navigation2DEnv
    assert memory.METATEST_EPISODES == PROTOCOL_EPISODES
    assert memory.POLICY_HIDDEN == inspect.signature(problems.build_problem).parameters["hidden"].default
    assert memory.SINUSOID_HIDDEN == tuple(l.units for l in make_sinusoid_model().layers[:-1])
    assert memory.RL_SPACES["navigation2d"][:2] == (Navigation2DEnv.observation_space.shape[0],
                                                     Navigation2DEnv.action_space.shape[0])
    for dataset, env_id in (("halfcheetah_vel", "HalfCheetah-v5"), ("ant_dir", "Ant-v5")):
        env = gym.make(env_id)
        assert memory.RL_SPACES[dataset][:2] == (env.observation_space.shape[0], env.action_space.shape[0])
        env.close()


# --- refusals: one line naming the flags and the estimate ----------------------------------------------------
BAD_RUNS = [
    ("supervised meta-batch", dict(dataset="omniglot", meta_batch_size=10 ** 8), "--meta_batch_size=100000000"),
    ("sinusoid meta-batch", dict(dataset="sinusoid", meta_batch_size=10 ** 8), "--meta_batch_size=100000000"),
    ("inner steps", dict(dataset="miniimagenet", num_inner_training_iterations=10 ** 9),
     "--num_inner_training_iterations=1000000000"),
    ("RL episodes", dict(dataset="halfcheetah_vel", metamodel="maml", episodes_per_task=10 ** 8),
     "--episodes_per_task=100000000"),
    ("RL meta-batch", dict(dataset="navigation2d", metamodel="maml", meta_batch_size=10 ** 8),
     "--meta_batch_size=100000000"),
]


@pytest.mark.parametrize("label,settings,flag", BAD_RUNS, ids=[b[0] for b in BAD_RUNS])
def test_runs_that_cannot_fit_are_refused_by_check_config(label, settings, flag):
    c = resolve_rl_defaults(RunConfig(**settings), set(settings))
    with pytest.raises(ValueError) as e:
        check_config(c)
    message = str(e.value)
    assert "\n" not in message and flag in message and "need about" in message and "available" in message
    estimate = estimate_memory(c)
    assert memory.human(estimate.total) in message
    assert estimate.total > memory.available_memory() + memory.resident_bytes()


def test_the_refusal_compares_the_estimate_with_the_memory_available():
    """The same run passes or is refused depending on the memory available only."""
    c = RunConfig(dataset="miniimagenet", meta_batch_size=4)
    total = estimate_memory(c).total
    check_memory(c, available=total)
    with pytest.raises(ValueError, match=r"^--meta_batch_size=4 .* need about .* more than the 1\.0 GiB available"):
        check_memory(c, available=GiB)


@pytest.mark.parametrize("horizon", [MAX_HORIZON + 1, 10 ** 9])
def test_a_horizon_above_the_maximum_is_refused(horizon):
    for c in (RunConfig(dataset="navigation2d", metamodel="maml", horizon=horizon),
              MetaTestConfig(dataset="halfcheetah_vel", model="m.h5", horizon=horizon)):
        check = check_config if isinstance(c, RunConfig) else check_metatest_config
        with pytest.raises(ValueError, match=rf"^--horizon={horizon} is above the {MAX_HORIZON} steps"):
            check(c)
    check_memory(RunConfig(dataset="navigation2d", metamodel="maml", horizon=MAX_HORIZON), available=100 * GiB)


def test_invalid_counts_are_left_to_the_other_checks():
    """A setting that is not a count (from a model file: a string, a float) or is out of range gets its
    own message from the config checks, not a traceback from the estimate."""
    assert estimate_memory(MetaTestConfig(dataset="navigation2d", model="m", horizon="200")) is None
    assert estimate_memory(RunConfig(dataset="omniglot", meta_batch_size=0)) is None
    assert estimate_memory(RunConfig(dataset="omniglot", num_train_samples_per_class=2.5)) is None
    with pytest.raises(ValueError, match="--meta_batch_size must be >= 1"):
        check_config(RunConfig(dataset="omniglot", meta_batch_size=0))


# --- the usual runs still pass ---------------------------------------------------------------------------------
USUAL = {
    "Mini-ImageNet 5-way 5-shot meta-batch 4 (FOMAML)": RunConfig(dataset="miniimagenet", meta_batch_size=4),
    "Mini-ImageNet 5-way 1-shot meta-batch 4 (MAML)": RunConfig(dataset="miniimagenet", meta_batch_size=4,
                                                                num_train_samples_per_class=1, metamodel="maml"),
    "Mini-ImageNet 5-way 1-shot meta-batch 4 (iMAML)": RunConfig(dataset="miniimagenet", meta_batch_size=4,
                                                                 num_train_samples_per_class=1, metamodel="imaml"),
    "Omniglot 20-way 1-shot meta-batch 16 (MAML)": RunConfig(dataset="omniglot", num_output_classes=20,
                                                             num_train_samples_per_class=1, meta_batch_size=16,
                                                             metamodel="maml"),
    "Omniglot 5-way 5-shot (defaults)": RunConfig(dataset="omniglot"),
    "sinusoid (defaults)": RunConfig(dataset="sinusoid"),
    "HalfCheetah vel MAML-TRPO (defaults)": resolve_rl_defaults(RunConfig(dataset="halfcheetah_vel", metamodel="maml"), set()),
    "HalfCheetah dir MAML-TRPO (defaults)": resolve_rl_defaults(RunConfig(dataset="halfcheetah_dir", metamodel="maml"), set()),
    "Ant dir MAML-TRPO (defaults)": resolve_rl_defaults(RunConfig(dataset="ant_dir", metamodel="maml"), set()),
    "2D navigation MAML-TRPO (defaults)": resolve_rl_defaults(RunConfig(dataset="navigation2d", metamodel="maml"), set()),
    "2D navigation meta-test (defaults)": MetaTestConfig(dataset="navigation2d", model="m.h5"),
    "HalfCheetah meta-test (defaults)": MetaTestConfig(dataset="halfcheetah_vel", model="m.h5"),
    "Mini-ImageNet meta-test 5-shot (defaults)": MetaTestConfig(dataset="miniimagenet", model="m.h5",
                                                                num_train_samples_per_class=5),
}


@pytest.mark.parametrize("name", list(USUAL))
def test_the_usual_runs_pass(name):
    """The README's runs pass the checks on this machine and would on one with 8 GiB available (the
    Mini-ImageNet file, 1.2 GiB, included)."""
    c = USUAL[name]
    check = check_config if isinstance(c, RunConfig) else check_metatest_config
    check(c)
    estimate = estimate_memory(c)
    dataset = 1.2 * GiB if c.dataset == "miniimagenet" else 0
    assert estimate.total + dataset < 8 * GiB, memory.human(estimate.total)
    check_memory(c, available=int(estimate.total + dataset))


# --- from the command line: exit 2, one line, before TensorFlow starts ---------------------------------------
PROBE = """
import json, sys
sys.argv = ["pymeta-train", *sys.argv[1:]]
from pymeta.cli import train
try:
    train.run()
    code = 0
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "tensorflow": "tensorflow" in sys.modules}))
"""


@pytest.mark.parametrize("args,flag", [
    (["--dataset=navigation2d", "--metamodel=maml", "--horizon=1000000000"], "--horizon=1000000000 is above"),
    (["--dataset=halfcheetah_vel", "--metamodel=maml", "--episodes_per_task=100000000"],
     "--episodes_per_task=100000000"),
    (["--dataset=omniglot", "--meta_batch_size=100000000"], "--meta_batch_size=100000000"),
    (["--dataset=navigation2d", "--metamodel=fomaml", "--meta_batch_size=100000000"], "--meta_batch_size=100000000"),
], ids=["horizon", "episodes", "supervised meta-batch", "RL meta-batch"])
def test_the_command_line_refuses_at_once(tmp_path, args, flag):
    out = subprocess.run([sys.executable, "-c", PROBE, *args, f"--model_save_filename={tmp_path}/m.h5"],
                         capture_output=True, text=True, cwd=REPO, timeout=120,
                         env=dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", "")))
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"code": 2, "tensorflow": False}, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and flag in lines[0], out.stderr[-2000:]
    if "horizon" not in flag:
        assert "need about" in lines[0] and "available" in lines[0]
    assert not os.path.exists(tmp_path / "m.h5")


def model_file(path, settings):
    """A file that records `settings` as a model file does (the weights are never reached)."""
    with h5py.File(path, "w") as f:
        f.attrs["pymeta_settings"] = json.dumps(settings)
    return str(path)


def test_settings_read_from_a_model_file_are_bounded_alike(tmp_path):
    """A model file whose recorded settings ask for 10^10 examples per class is refused by the meta-test
    checks in one line naming the flag and the estimate, like the same flag given."""
    from pymeta.cli.metatest import parse_args
    path = model_file(tmp_path / "m.h5", {"dataset": "sinusoid", "metamodel": "fomaml",
                                           "num_train_samples_per_class": 10 ** 10, "inner_batch_size": 10})
    c = parse_args(["--model", path, "--num_tasks", "2"])
    assert c.num_train_samples_per_class == 10 ** 10
    with pytest.raises(ValueError, match=r"--num_train_samples_per_class=10000000000 .* need about") as e:
        check_metatest_config(c)
    assert "\n" not in str(e.value)


def test_the_meta_test_command_refuses_a_stored_horizon(tmp_path):
    """From the command line: exit 2 and one error line, nothing evaluated."""
    path = model_file(tmp_path / "m.h5", {"dataset": "navigation2d", "metamodel": "maml", "horizon": 10 ** 9})
    out = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "meta_test.py"), f"--model={path}",
                          "--num_tasks=2", f"--output={tmp_path}/r.json"], capture_output=True, text=True, cwd=REPO,
                         timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert out.returncode == 2 and len(errors) == 1, out.stderr[-2000:]
    assert errors[0].startswith("error: --horizon=1000000000 is above the 10000 steps")
    assert "Traceback" not in out.stderr and not os.path.exists(tmp_path / "r.json")
