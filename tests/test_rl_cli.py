"""RL through the command line (#13): example_metatrain.py --dataset=navigation2d / halfcheetah_*, resume
after SIGKILL, SIGTERM, one-line errors, and scripts/meta_test.py's MAML evaluation protocol. Tiny
settings (meta-batch 2, 2 episodes, horizon 10; FOMAML, whose outer step compiles in seconds, where
TRPO's takes a minute on a loaded machine)."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from conftest import REPO

TINY = ["--dataset=navigation2d", "--metamodel=fomaml", "--meta_batch_size=2", "--episodes_per_task=2",
        "--horizon=10", "--seed=3"]


def _env():
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the CLI quiets TensorFlow's start-up lines itself
    return env


def _cmd(script, *args):
    return [sys.executable, os.path.join(REPO, script), *map(str, args)]


def _run(script, *args, timeout=300):
    return subprocess.run(_cmd(script, *args), capture_output=True, text=True, cwd=REPO, env=_env(),
                          timeout=timeout)


def _train_args(model, iterations, *extra):
    return [*TINY, f"--model_save_filename={model}", f"--num_outer_metatraining_iterations={iterations}",
            "--save_every_k_iterations=1", "--test_every_k_iterations=5", *extra]


def _weights(path):
    import pymeta.rl  # noqa: F401  (registers the policy's layers)
    from pymeta.model_io import load_model
    return load_model(path).get_weights()


def _without_seconds(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


N = 40  # iterations of the resume test (long enough to SIGKILL the run in the middle)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted tiny run of N iterations: its model file, history and output."""
    model = str(tmp_path_factory.mktemp("ref") / "model.h5")
    out = _run("example_metatrain.py", *_train_args(model, N))
    assert out.returncode == 0, out.stderr[-3000:]
    return model, out


@pytest.mark.slow
def test_cli_trains_navigation2d_and_writes_its_files(reference):
    model, out = reference
    assert "error" not in out.stderr.lower(), out.stderr[-3000:]
    assert "settings: --dataset=navigation2d --metamodel=fomaml --outer_optimizer=adam --meta_batch_size=2" \
        in out.stdout
    assert "--num_inner_training_iterations=1 --inner_lr=0.5 --meta_lr=0.01" in out.stdout  # RL defaults
    assert "return before adaptation" in out.stdout and "validation: return after 0..1" in out.stdout
    base = model[:-3]
    for suffix in ("_history.json", "_learning_curve.png", "_trajectories.png"):
        assert os.path.getsize(base + suffix) > 0, suffix
    data = json.load(open(base + "_history.json"))
    train = [h for h in data["history"] if "return_before" in h]
    assert [h["iteration"] for h in train] == list(range(1, N + 1))
    val = [h for h in data["history"] if "validation_returns_by_step" in h]
    assert [h["iteration"] for h in val] == list(range(0, N + 1, 5))
    assert all(len(h["validation_returns_by_step"]) == 2 for h in val)
    import tensorflow as tf
    tags = set()
    for events in os.listdir(model + "_run/tensorboard"):
        for e in tf.compat.v1.train.summary_iterator(os.path.join(model + "_run/tensorboard", events)):
            tags.update(v.tag for v in e.summary.value)
    assert {"train/return_before_adaptation", "train/return_after_adaptation", "validation/return_after_step_0",
            "validation/return_after_step_1"} <= tags
    with h5py.File(model, "r") as f:
        settings = json.loads(f.attrs["pymeta_settings"])
    assert settings["dataset"] == "navigation2d" and settings["horizon"] == 10 and settings["inner_lr"] == 0.5


@pytest.mark.slow
def test_resume_after_sigkill_continues_exactly(reference, tmp_path):
    model = str(tmp_path / "model.h5")  # same file name: same run identity as the reference
    proc = subprocess.Popen(_cmd("example_metatrain.py", *_train_args(model, N)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=REPO, env=_env())
    ckpt = os.path.join(model + "_run", "ckpt-00000003.h5")
    deadline = time.time() + 240
    while not os.path.exists(ckpt) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.load(open(model[:-3] + "_history.json"))["history"]
    assert len([h for h in killed_at if "return_before" in h]) < N
    out = _run("example_metatrain.py", *_train_args(model, N))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed from" in out.stdout
    for a, b in zip(_weights(reference[0]), _weights(model)):
        np.testing.assert_array_equal(a, b)
    ref_history = json.load(open(reference[0][:-3] + "_history.json"))["history"]
    assert _without_seconds(json.load(open(model[:-3] + "_history.json"))["history"]) == \
        _without_seconds(ref_history)


@pytest.mark.slow
def test_sigterm_writes_checkpoint_and_model_and_exits_143(tmp_path):
    model = str(tmp_path / "model.h5")
    proc = subprocess.Popen(_cmd("example_metatrain.py", *_train_args(model, 100000, "--save_every_k_iterations=1000")),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=_env())
    line = ""
    while "iter      2  return" not in line and proc.poll() is None:  # the log line of iteration 2
        line = proc.stdout.readline()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "stopped by SIGTERM; checkpoint written to" in err
    assert os.path.exists(model)
    ckpts = [n for n in os.listdir(model + "_run") if n.startswith("ckpt-")]
    assert len(ckpts) == 1 and int(ckpts[0][5:13]) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("source", ["model", "checkpoint"])
def test_init_model_starts_from_that_theta(reference, tmp_path, source):
    """--init_model: the new run's first validation (same seed: same tasks and episodes) equals the
    reference run's last one, whose theta it started from (a model file, or the last checkpoint)."""
    path = reference[0] if source == "model" else os.path.join(reference[0] + "_run", f"ckpt-{N:08d}.h5")
    model = str(tmp_path / "warm.h5")
    out = _run("example_metatrain.py", *_train_args(model, 1, f"--init_model={path}"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"initial theta from --init_model={path}" in out.stdout
    ref = [h for h in json.load(open(reference[0][:-3] + "_history.json"))["history"]
           if "validation_returns_by_step" in h]
    warm = [h for h in json.load(open(model[:-3] + "_history.json"))["history"] if "validation_returns_by_step" in h]
    assert ref[-1]["iteration"] == N and warm[0]["iteration"] == 0
    assert warm[0]["validation_returns_by_step"] == ref[-1]["validation_returns_by_step"]
    assert ref[0]["validation_returns_by_step"] != ref[-1]["validation_returns_by_step"]  # training moved theta


@pytest.mark.slow
def test_init_model_errors_are_one_line(tmp_path):
    out = _run("example_metatrain.py", *_train_args(tmp_path / "m.h5", 1, f"--init_model={tmp_path}/none.h5"))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"error: --init_model: no model file at '{tmp_path}/none.h5'"]
    other = os.path.join(REPO, "pretrained", "rl", "halfcheetah_dir", "halfcheetah_dir_maml.h5")  # 17 observations
    out = _run("example_metatrain.py", *_train_args(tmp_path / "m.h5", 1, f"--init_model={other}"))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds a model of another architecture" in lines[0], out.stderr[-3000:]


@pytest.mark.parametrize("args, message", [
    (["--metamodel=imaml"], "--metamodel=imaml does not do reinforcement learning (--dataset=navigation2d): "
                            "use one of maml, fomaml, reptile"),
    (["--metamodel=fomaml", "--outer_optimizer=trpo"], "--outer_optimizer=trpo is MAML's outer step"),
    (["--episodes_per_task=0"], "--episodes_per_task must be >= 1"),
    (["--gamma=1.5"], "--gamma must be in (0, 1]"),
    (["--env_kwargs=[1]"], "--env_kwargs must be a JSON object"),
    (['--env_kwargs={"frame_skip": 1}'], "--env_kwargs applies to the gymnasium datasets"),
])
def test_bad_rl_settings_are_one_line_errors(args, message):
    from pymeta.config import RunConfig, check_config, resolve_rl_defaults
    kwargs = dict(a[2:].split("=") for a in ["--dataset=navigation2d", *args])
    c = RunConfig(**{k: type(getattr(RunConfig(), k))(v) for k, v in kwargs.items()})
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        check_config(resolve_rl_defaults(c))


def test_bad_combination_through_the_cli_is_one_line(tmp_path):
    out = _run("example_metatrain.py", "--dataset=navigation2d", "--metamodel=fomaml", "--outer_optimizer=trpo",
               f"--model_save_filename={tmp_path}/m.h5")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: --outer_optimizer=trpo is MAML's outer step: use --outer_optimizer=adam (or auto) with "
        "--metamodel=fomaml"]


def test_rl_defaults_apply_only_to_flags_not_given():
    from pymeta.config import RunConfig, resolve_rl_defaults
    c = resolve_rl_defaults(RunConfig(dataset="halfcheetah_vel", metamodel="maml", inner_lr=0.001),
                            given={"dataset", "metamodel", "inner_lr"})
    assert (c.inner_lr, c.meta_batch_size, c.horizon, c.outer_optimizer) == (0.001, 40, 200, "trpo")
    c = resolve_rl_defaults(RunConfig(dataset="navigation2d", metamodel="reptile"))
    assert (c.inner_lr, c.meta_batch_size, c.horizon, c.outer_optimizer, c.num_inner_training_iterations) == \
        (0.5, 20, 100, "adam", 1)
    assert resolve_rl_defaults(RunConfig(dataset="sinusoid")) == RunConfig(dataset="sinusoid")


@pytest.mark.slow
def test_meta_test_writes_returns_and_ci_by_step(reference, tmp_path):
    out_json, png = tmp_path / "r.json", tmp_path / "r.png"
    out = _run("scripts/meta_test.py", "--model", reference[0], "--num_tasks", 3, "--num_inner_iterations", 2,
               "--episodes_per_task", 2, "--output", out_json, "--plot", png)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out_json.read_text())
    assert len(r["returns_by_step"]) == len(r["ci95_by_step"]) == 3
    assert r["step_sizes"] == [0.5, 0.25] and r["horizon"] == 10 and r["dataset"] == "navigation2d"
    assert r["num_tasks"] == 3 and r["settings"]["metamodel"] == "fomaml" and "meta_test.py" in r["command"]
    assert png.stat().st_size > 0
    assert "navigation2d (fomaml init), 3 tasks x 2 episodes, return after 0..2 steps: 0: " in out.stdout
    taken = [l for l in out.stdout.splitlines() if l.startswith("settings from")]
    assert len(taken) == 1 and "--horizon=10" in taken[0] and "--inner_lr=0.5" in taken[0]
    assert "--num_output_classes" not in taken[0]  # supervised settings do not matter for RL


def test_meta_test_of_a_random_initialisation(reference, caplog, tmp_path, monkeypatch):
    """--init random: the same policy freshly initialised (in-process, through pymeta.metatest.meta_test)."""
    import logging

    from pymeta.config import MetaTestConfig
    from pymeta.metatest import meta_test
    c = MetaTestConfig(model=reference[0], dataset="navigation2d", metamodel="fomaml", inner_lr=0.5, horizon=10,
                       num_tasks=2, num_inner_iterations=1, episodes_per_task=2, init="random")
    with caplog.at_level(logging.INFO, logger="pymeta"):
        r = meta_test(c)
    assert len(r["returns_by_step"]) == len(r["ci95_by_step"]) == 2 and r["init"] == "random"
    assert len(r["mean_episode_length_by_step"]) == 2 and all(0 < n <= 10 for n in r["mean_episode_length_by_step"])
    np.testing.assert_allclose(np.mean(r["returns_by_task"], axis=0), r["returns_by_step"])
    assert len(r["task_params"]) == 2 and len(r["task_params"][0]) == 2  # the goals
    assert "navigation2d (random init), 2 tasks x 2 episodes" in caplog.text
    # the meta-learnt vs random figure: the trained init's curve drawn with the random one's JSON
    (tmp_path / "random.json").write_text(json.dumps(r))
    import dataclasses
    both = meta_test(dataclasses.replace(c, init="trained", plot=str(tmp_path / "both.png"),
                                         plot_with=str(tmp_path / "random.json")))
    assert (tmp_path / "both.png").stat().st_size > 0 and both["init"] == "trained"
    # several earlier curves (comma-separated): each drawn once, beside this meta-test's
    joint = {**r, "init": "trained", "model": "joint.h5", "returns_by_step": [-5.0, -4.0],
             "settings": {"metamodel": "reptile"}}
    (tmp_path / "joint.json").write_text(json.dumps(joint))
    drawn = {}
    monkeypatch.setattr("pymeta.plots.plot_adaptation_returns", lambda curves, path: drawn.update(curves))
    meta_test(dataclasses.replace(c, init="trained", plot=str(tmp_path / "three.png"),
                                  plot_with=f"{tmp_path / 'random.json'},{tmp_path / 'joint.json'}"))
    assert len(drawn) == 3 and drawn["random initialisation"][0] == r["returns_by_step"]
    assert drawn["reptile (joint.h5)"][0] == [-5.0, -4.0]
    with pytest.raises(ValueError, match="--plot_with draws into --plot"):
        meta_test(dataclasses.replace(c, plot_with=str(tmp_path / "random.json")))


def test_meta_test_on_given_task_parameters(reference, tmp_path):
    """--test_tasks: the tasks adapted to are the file's (a list, or an earlier result's task_params), at
    most --num_tasks of them; a goal 5 away per coordinate gives the return the dynamics bound allow."""
    from pymeta.config import MetaTestConfig
    from pymeta.metatest import meta_test
    goals = [[5.0, 5.0], [0.25, -0.125], [0.0, 0.0]]
    (tmp_path / "goals.json").write_text(json.dumps(goals))
    c = MetaTestConfig(model=reference[0], dataset="navigation2d", metamodel="fomaml", inner_lr=0.5, horizon=10,
                       num_tasks=2, num_inner_iterations=1, episodes_per_task=2,
                       test_tasks=str(tmp_path / "goals.json"))
    r = meta_test(c)
    assert r["task_params"] == goals[:2] and r["num_tasks"] == 2
    # 10 steps of at most 0.1 per coordinate from the origin: after step k the distance to (5, 5) is
    # within sqrt(2) 0.1 k of sqrt(2) 5, so the return lies between the sums of the two bounds
    k = np.arange(1, 11)
    assert -np.sqrt(2) * (5 + 0.1 * k).sum() <= r["returns_by_task"][0][0] <= -np.sqrt(2) * (5 - 0.1 * k).sum()
    near = np.hypot(0.25, 0.125) + np.sqrt(2) * 0.1 * k  # the second goal: the distance's upper bound
    assert r["returns_by_task"][1][0] >= -near.sum()
    (tmp_path / "r.json").write_text(json.dumps(r))  # an earlier result's task_params
    again = meta_test(dataclasses.replace(c, test_tasks=str(tmp_path / "r.json"), num_tasks=40))
    assert again["task_params"] == goals[:2]
    (tmp_path / "bad.json").write_text(json.dumps([[1.0, 2.0, 3.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="is not a task parameter of shape \\[2\\]"):
        meta_test(dataclasses.replace(c, test_tasks=str(tmp_path / "bad.json")))
    (tmp_path / "one.json").write_text(json.dumps({"task_params": [[0.0, 0.0]]}))
    with pytest.raises(ValueError, match="at least 2 task parameters"):
        meta_test(dataclasses.replace(c, test_tasks=str(tmp_path / "one.json")))
    with pytest.raises(ValueError, match="--test_tasks: .*missing.json: no such file"):
        meta_test(dataclasses.replace(c, test_tasks=str(tmp_path / "missing.json")))
    from pymeta.rl.evaluation import _task_params_like  # dict parameters (gymnasium tasks): the same keys
    assert _task_params_like({"velocity": np.float64(0.3)}, {"velocity": 1.5}, "f.json") == {"velocity": 1.5}
    for wrong in ({"speed": 1.5}, [1.5]):
        with pytest.raises(ValueError, match="is not a task parameter dict with the keys of {'velocity': 0.3}"):
            _task_params_like({"velocity": np.float64(0.3)}, wrong, "f.json")
    with pytest.raises(ValueError, match="^--test_tasks, --repeats and --step_sizes are for RL datasets"):
        meta_test(MetaTestConfig(model=reference[0], dataset="sinusoid", test_tasks=str(tmp_path / "goals.json")))


def test_meta_test_repeats_average_single_passes(reference, tmp_path):
    """--repeats 2: the same tasks adapted to twice, with the episodes of --seed and --seed + 1; the result
    is the mean of the two single passes run separately (the second on the first's task parameters)."""
    from pymeta.config import MetaTestConfig
    from pymeta.metatest import meta_test
    c = MetaTestConfig(model=reference[0], dataset="navigation2d", metamodel="fomaml", inner_lr=0.5, horizon=10,
                       num_tasks=3, num_inner_iterations=1, episodes_per_task=2, seed=4)
    first = meta_test(c)
    (tmp_path / "first.json").write_text(json.dumps(first))
    second = meta_test(dataclasses.replace(c, seed=5, test_tasks=str(tmp_path / "first.json")))
    both = meta_test(dataclasses.replace(c, repeats=2))
    assert both["task_params"] == first["task_params"] == second["task_params"] and both["repeats"] == 2
    np.testing.assert_allclose(both["returns_by_step_by_repeat"],
                               [first["returns_by_step"], second["returns_by_step"]], rtol=1e-6)
    np.testing.assert_allclose(both["returns_by_task"],
                               (np.array(first["returns_by_task"]) + second["returns_by_task"]) / 2, rtol=1e-6)
    np.testing.assert_allclose(both["returns_by_step"], np.mean(both["returns_by_task"], axis=0), rtol=1e-6)
    assert first["returns_by_step"] != second["returns_by_step"]  # the repeats saw different episodes
    with pytest.raises(ValueError, match="^--repeats must be >= 1, got 0"):
        meta_test(dataclasses.replace(c, repeats=0))


def test_meta_test_step_sizes_replace_the_protocols_schedule(reference):
    """--step_sizes: the schedule written out as the protocol's (lr, lr / 2, ...) gives the protocol's
    result; another schedule is used and recorded; bad lists are one-line errors."""
    from pymeta.config import MetaTestConfig
    from pymeta.metatest import meta_test
    c = MetaTestConfig(model=reference[0], dataset="navigation2d", metamodel="fomaml", inner_lr=0.5, horizon=10,
                       num_tasks=3, num_inner_iterations=3, episodes_per_task=2, seed=4)
    protocol = meta_test(c)
    written = meta_test(dataclasses.replace(c, step_sizes="0.5,0.25,0.25"))
    assert protocol["step_sizes"] == written["step_sizes"] == [0.5, 0.25, 0.25]
    np.testing.assert_array_equal(written["returns_by_task"], protocol["returns_by_task"])
    constant = meta_test(dataclasses.replace(c, step_sizes="0.25,0.25,0.25"))
    assert constant["step_sizes"] == [0.25, 0.25, 0.25]
    # same episodes before adaptation (same seed), other steps after it
    np.testing.assert_array_equal(np.array(constant["returns_by_task"])[:, 0],
                                  np.array(protocol["returns_by_task"])[:, 0])
    assert constant["returns_by_step"][1:] != protocol["returns_by_step"][1:]
    for bad, message in (("0.5,0.25", "2 step sizes for --num_inner_iterations=3 (one per step)"),
                         ("0.5,x,0.2", "not comma-separated numbers"),
                         ("0.5,-0.1,0.2", "step sizes must be finite and >= 0"),
                         ("0.5,nan,0.2", "step sizes must be finite and >= 0")):
        with pytest.raises(ValueError, match=f"^--step_sizes={bad}: {re.escape(message)}$"):
            meta_test(dataclasses.replace(c, step_sizes=bad))


@pytest.mark.slow
def test_meta_test_of_a_checkpoint_equals_the_model_file_it_became(reference, tmp_path):
    """--model <run_dir>/ckpt-N.h5: a checkpointed meta-iteration meta-tested like a model file; the last
    checkpoint holds the final model's weights, so both give the same returns, with the settings of the
    run (read from the checkpoint's config)."""
    import pymeta.rl  # noqa: F401
    from pymeta.checkpoint import read_checkpoint_weights
    from pymeta.model_io import load_settings
    model = reference[0]
    last = os.path.join(model + "_run", f"ckpt-{N:08d}.h5")
    theta, _, config = read_checkpoint_weights(last)
    for a, b in zip(theta, _weights(model)):
        np.testing.assert_array_equal(a, b)
    assert read_checkpoint_weights(model) is None  # a model file is not a checkpoint
    from_model, from_ckpt = load_settings(model), load_settings(last)
    assert {"dataset", "horizon", "inner_lr", "restart_episodes"} <= set(from_ckpt)
    assert all(from_model[k] == v for k, v in from_ckpt.items() if k != "inner_optimizer")  # 'auto' there
    outs = []
    for path, name in ((model, "m.json"), (last, "c.json")):
        out = _run("scripts/meta_test.py", "--model", path, "--num_tasks", 2, "--num_inner_iterations", 1,
                   "--episodes_per_task", 2, "--output", tmp_path / name)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "--horizon=10" in [l for l in out.stdout.splitlines() if l.startswith("settings from")][0]
        outs.append(json.loads((tmp_path / name).read_text()))
    assert outs[0]["returns_by_task"] == outs[1]["returns_by_task"]
    from pymeta.model_io import load_weights_into
    from pymeta.rl.policies import make_gaussian_policy
    with pytest.raises(ValueError, match="holds a model of another architecture: theta shapes"):
        load_weights_into(make_gaussian_policy(3, 2), last)


def test_lr_then_half_lr_matches_steps_by_hand():
    """adaptation_returns with step sizes [lr, lr / 2] on one task = collecting and taking the two
    policy-gradient steps by hand (GradientTape on the objective, w <- w - lr_k g)."""
    import tensorflow as tf

    from pymeta.core.learner import Learner
    from pymeta.rl.problems import build_problem
    from pymeta.rl.task import adaptation_returns, collect
    from pymeta.rl.evaluation import step_sizes
    p = build_problem("navigation2d", "fomaml", meta_batch_size=1, episodes_per_task=3, horizon=10, seed=0)
    lr, e = 0.3, 3
    assert step_sizes(lr, 3) == [0.3, 0.15, 0.15]
    np.random.seed(5)
    task = p.distribution.sample_batch(1)[0]
    w0 = p.model.get_weights()
    learner = Learner(p.model, inner_optimizer=p.metalearner.inner_optimizer, objective=p.agent.objective)
    np.random.seed(7)
    got = adaptation_returns(learner, [task], 2, e, step_lrs=step_sizes(lr, 2), per_task=True)
    assert got.shape == (3, 1)
    np.testing.assert_array_equal(p.model.get_weights()[0], w0[0])  # theta untouched

    np.random.seed(7)
    by_hand = []
    for step_lr in (lr, lr / 2, None):
        episodes = collect([task], p.agent, e)
        by_hand.append(episodes.returns().mean())
        if step_lr is None:
            break
        batch = task.batch(episodes.map(lambda x: x[0]))
        params = p.model.trainable_variables
        with tf.GradientTape() as tape:
            loss = p.agent.objective([tf.convert_to_tensor(v) for v in params], p.agent.read_state(), batch)
        for v, g in zip(params, tape.gradient(loss, params)):
            v.assign_sub(step_lr * g)
    np.testing.assert_allclose(got[:, 0], by_hand, rtol=1e-4)
    p.model.set_weights(w0)


@pytest.mark.slow
def test_halfcheetah_smoke_through_the_run(tmp_path, monkeypatch):
    """HalfCheetah-vel through the training run (in-process, as the CLI calls it: a subprocess would
    double the time with TensorFlow's start-up)."""
    pytest.importorskip("mujoco")
    pytest.importorskip("gymnasium")
    from pymeta.config import RunConfig, resolve_rl_defaults
    from pymeta.training import metatrain
    monkeypatch.chdir(tmp_path)  # MuJoCo appends its warnings to MUJOCO_LOG.TXT in the working folder
    model = str(tmp_path / "model.h5")
    c = resolve_rl_defaults(RunConfig(dataset="halfcheetah_vel", metamodel="fomaml", meta_batch_size=2,
                                      episodes_per_task=2, horizon=10, tensorboard=False,
                                      model_save_filename=model, num_outer_metatraining_iterations=1))
    assert (c.inner_lr, c.outer_optimizer) == (0.1, "adam")
    history = metatrain(c)
    assert [h["iteration"] for h in history] == [0, 1, 1]  # validation, iteration 1, validation
    assert os.path.exists(model) and os.path.exists(model[:-3] + "_learning_curve.png")


@pytest.mark.slow
def test_env_kwargs_are_recorded_and_meta_test_uses_them(tmp_path, monkeypatch):
    """--env_kwargs reach training and, through the model file, the meta-test: with the x position in the
    observation (18 numbers instead of 17) the trained policy only fits environments built with them."""
    pytest.importorskip("mujoco")
    pytest.importorskip("gymnasium")
    from pymeta.cli.metatest import parse_args
    from pymeta.config import RunConfig, resolve_rl_defaults
    from pymeta.metatest import meta_test
    from pymeta.training import metatrain
    monkeypatch.chdir(tmp_path)
    model, kwargs = str(tmp_path / "model.h5"), '{"exclude_current_positions_from_observation": false}'
    metatrain(resolve_rl_defaults(RunConfig(dataset="halfcheetah_vel", metamodel="fomaml", meta_batch_size=2,
                                            episodes_per_task=2, horizon=10, tensorboard=False, env_kwargs=kwargs,
                                            model_save_filename=model, num_outer_metatraining_iterations=1)))
    assert _weights(model)[0].shape[0] == 18
    args = ["--model", model, "--num_tasks=2", "--num_inner_iterations=1", "--episodes_per_task=2"]
    c = parse_args(args)
    assert c.env_kwargs == kwargs and c.horizon == 10
    result = meta_test(c)
    assert len(result["returns_by_step"]) == 2 and np.all(np.isfinite(result["returns_by_step"]))
    with pytest.raises(ValueError, match="holds a model of another architecture"):
        meta_test(parse_args(args + ["--env_kwargs={}"]))  # gymnasium's default observation: 17 numbers
