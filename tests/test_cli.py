"""The command-line programs and their configuration: flags generated from the config dataclasses (the
original pyMeta's names and defaults), `--help` of the modules and of the installed console scripts,
TensorFlow's start-up lines kept off the terminal, SeqFOMAML from the command line."""

import dataclasses
import importlib.metadata
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from pymeta.config import CliOptions, MetaTestConfig, RunConfig, check_config, check_metatest_config, define_flags

# the original pyMeta's example_metatrain.py flags and defaults (part of the API)
ORIGINAL_FLAGS = {"dataset": "omniglot", "metamodel": "fomaml", "num_output_classes": 5,
                  "num_train_samples_per_class": 5, "num_test_samples_per_class": 15,
                  "num_outer_metatraining_iterations": 10000, "meta_batch_size": 5, "meta_lr": 0.001,
                  "num_validation_batches": 10, "num_inner_training_iterations": 5, "inner_batch_size": -1,
                  "inner_lr": 0.001, "save_every_k_iterations": 1000, "test_every_k_iterations": 100,
                  "model_save_filename": "saved/model.h5", "seed": 100}


def cli_env(**extra):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p))
    env.update(extra)
    return env


def run_module(module, *args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env=env or cli_env(), timeout=timeout)


def flag_values(cls):
    from absl import flags
    fv = flags.FlagValues()
    define_flags(cls, fv)
    return fv


def test_flags_are_generated_from_the_config_with_the_original_names_and_defaults():
    fv = flag_values(RunConfig)
    for f in dataclasses.fields(RunConfig):
        assert fv[f.name].default == f.default, f.name
        assert fv[f.name].help
    for name, default in ORIGINAL_FLAGS.items():
        assert fv[name].default == default, name
    fv(["prog", "--model_save_filaname=x/m.h5", "--nofast", "--meta_lr", "0.5"])  # the original's misspelling
    assert (fv.model_save_filename, fv.fast, fv.meta_lr) == ("x/m.h5", False, 0.5)
    # meta-test: its own defaults for the shared flags
    fv = flag_values(MetaTestConfig)
    assert (fv["num_train_samples_per_class"].default, fv["inner_lr"].default, fv["seed"].default) == (1, 0.01, 0)
    assert fv["transductive"].default is True and fv["num_inner_iterations"].default == 10
    assert flag_values(CliOptions)["tf_log_level"].default == -1


def test_seqfomaml_variants_match_the_metalearner():
    from pymeta.metalearners.seq_fomaml import SEQ_FOMAML_VARIANTS
    from pymeta.registry import SEQ_FOMAML_VARIANTS as listed
    assert listed == SEQ_FOMAML_VARIANTS


@pytest.mark.parametrize("kw,message", [({"seqfomaml_variant": "all"}, "unknown --seqfomaml_variant='all'"),
                                        ({"seqfomaml_sequence_length": 0}, "--seqfomaml_sequence_length must be"),
                                        ({"precision": "float16"}, "--precision must be"),
                                        ({"inner_optimizer": "rmsprop"}, "unknown --inner_optimizer"),
                                        ({"seed": -5}, r"--seed must be in 0\.\.4294967295 \(numpy's seeds\), got -5"),
                                        ({"seed": 2 ** 32}, "--seed must be in 0..4294967295")])
def test_bad_values_are_refused_up_front(kw, message):
    with pytest.raises(ValueError, match=message):
        check_config(RunConfig(dataset="sinusoid", **kw))
    if "seed" in kw:  # the meta-test's flag too; numpy's own message named no flag
        with pytest.raises(ValueError, match=message):
            check_metatest_config(MetaTestConfig(model="m.h5", **kw))
    check_config(RunConfig(dataset="sinusoid", seed=2 ** 32 - 1))


@pytest.mark.parametrize("module,expected", [("pymeta.cli.train", ["--num_output_classes", "--metamodel",
                                                                   "--seqfomaml_variant", "--tf_log_level"]),
                                             ("pymeta.cli.metatest", ["--model", "--num_tasks", "--split"])])
def test_help_of_the_modules(module, expected):
    out = run_module(module, "--help", timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    for flag in expected:
        assert flag in out.stdout


@pytest.mark.parametrize("script", ["pymeta-train", "pymeta-metatest"])
def test_installed_console_scripts(script):
    """Where pymeta is installed with its console scripts (pip install -e .), they run."""
    names = {e.name for e in importlib.metadata.entry_points(group="console_scripts")}
    if script not in names:
        pytest.skip(f"{script} is not installed in this environment (pip install -e .)")
    exe = shutil.which(script) or os.path.join(os.path.dirname(sys.executable), script)
    assert os.path.exists(exe), f"{script} is registered but not found on PATH or next to {sys.executable}"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, cwd=REPO, env=cli_env(), timeout=120)
    assert out.returncode == 0 and "--dataset" in out.stdout, out.stderr[-2000:]


@pytest.mark.slow
def test_pip_install_gives_working_console_scripts(tmp_path):
    """Install a copy of the project (no network, no dependencies) into a fresh prefix: both console
    scripts exist and answer --help from the installed package."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, name), src / name)
    shutil.copytree(os.path.join(REPO, "pymeta"), src / "pymeta",
                    ignore=shutil.ignore_patterns("__pycache__"))
    prefix = tmp_path / "prefix"
    # --ignore-installed: never uninstall the pymeta this test runs from (pip would, even for --prefix)
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                          "--ignore-installed",
                          "--no-build-isolation", "--prefix", str(prefix), str(src)],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-3000:]
    site = next(prefix.glob("lib*/python*/site-packages"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    for script, flag in (("pymeta-train", "--num_outer_metatraining_iterations"), ("pymeta-metatest", "--model")):
        exe = prefix / "bin" / script
        assert exe.exists(), sorted(os.listdir(prefix / "bin"))
        out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, cwd=tmp_path, env=env,
                             timeout=120)
        assert out.returncode == 0 and flag in out.stdout, out.stderr[-2000:]
    version = subprocess.run([sys.executable, "-c", "import pymeta; print(pymeta.__file__, pymeta.__version__)"],
                             capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60).stdout.split()
    import pymeta
    assert version == [str(site / "pymeta" / "__init__.py"), pymeta.__version__]


def test_tensorflow_start_up_lines_stay_off_the_terminal():
    """Without TF_CPP_MIN_LOG_LEVEL or --tf_log_level the CLI prints nothing of TensorFlow's start-up
    (CUDA probe, cpu_feature_guard, oneDNN notice): a bad setting gives exactly one stderr line."""
    env = cli_env()
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    out = run_module("pymeta.cli.train", "--dataset=sinusoid", "--meta_lr=0", env=env, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["error: --meta_lr must be a finite number > 0, got 0.0"], out.stderr[-3000:]
    for noise in ("cpu_feature_guard", "cuda", "oneDNN", "InitializeLog"):
        assert noise not in out.stderr


@pytest.mark.slow
@pytest.mark.parametrize("fast", [True, False])
def test_seqfomaml_meta_trains_on_sequences(tmp_path, fast):
    """--metamodel=seqfomaml: meta-batches of TaskAsSequenceOfTasks of the chosen length, in both
    APIs; the run validates, saves and records the variant."""
    from pymeta.core.task import TaskAsSequenceOfTasks
    from pymeta.model_io import load_settings
    from pymeta.training import metatrain, setup_run
    config = RunConfig(dataset="sinusoid", metamodel="seqfomaml", seqfomaml_variant="loss_after_each_task",
                       seqfomaml_sequence_length=3, num_train_samples_per_class=10, num_test_samples_per_class=10,
                       inner_batch_size=5, inner_lr=0.01, meta_lr=0.01, meta_batch_size=2,
                       num_inner_training_iterations=2, num_outer_metatraining_iterations=4,
                       test_every_k_iterations=2, num_validation_batches=1, fast=fast, progress=False,
                       tensorboard=False, model_save_filename=str(tmp_path / "m.h5"))
    problem, _, metalearner = setup_run(config)
    batch = problem.metatrain.sample_batch()
    assert len(batch) == 2 and all(isinstance(t, TaskAsSequenceOfTasks) for t in batch)
    assert [t.get_sequence_length() for t in batch] == [3, 3]
    assert type(metalearner).__name__ == "SeqFOMAMLMetaLearner" and metalearner.variant == "loss_after_each_task"
    theta = metalearner.current_initial_parameters
    history = metatrain(config)
    assert [h["iteration"] for h in history] == [0, 2, 4]
    assert all(np.isfinite(h["val_loss"]) for h in history)
    settings = load_settings(tmp_path / "m.h5")
    assert settings["metamodel"] == "seqfomaml" and settings["seqfomaml_sequence_length"] == 3
    from pymeta.model_io import load_model
    assert not np.allclose(load_model(tmp_path / "m.h5").get_weights()[0], theta[0])
