"""A model file knows how it was trained: the settings meta-testing needs are recorded in the .h5, and
the meta-test takes them as its defaults (flags given explicitly still win; old files still work)."""

import json
import logging
import os
import pickle
import subprocess
import sys

import h5py
import pytest

from conftest import REPO
from data_fixtures import synthetic_omniglot_dict
from pymeta.cli.metatest import parse_args, setting_matters
from pymeta.config import MetaTestConfig, RunConfig
from pymeta.evaluation import meta_test
from pymeta.model_io import load_settings, save_model

# a tiny 3-way 1-shot Omniglot run on the original pyMeta's alphabet split, Reptile with Adam
TRAINED = dict(dataset="omniglot", omniglot_protocol="allcharacters", metamodel="reptile", num_output_classes=3,
               num_train_samples_per_class=1, num_test_samples_per_class=2, inner_lr=0.003,
               num_inner_training_iterations=3, inner_batch_size=2, meta_lr=0.5, transductive=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(model file, data file) of a few meta-iterations on a small synthetic Omniglot."""
    from pymeta.training import metatrain
    folder = tmp_path_factory.mktemp("settings")
    data = folder / "omniglot.pkl"
    with open(data, "wb") as f:
        pickle.dump(synthetic_omniglot_dict(alphabets=(30, 20), chars_per_alphabet=2, drawings=20, size=16), f)
    model = folder / "model.h5"
    metatrain(RunConfig(**TRAINED, data_path=str(data), meta_batch_size=2, num_outer_metatraining_iterations=4,
                        test_every_k_iterations=4, num_validation_batches=1, model_save_filename=str(model),
                        progress=False, tensorboard=False))
    return model, data


def test_the_model_file_records_its_training(trained):
    model, _ = trained
    settings = load_settings(model)
    for key, value in TRAINED.items():
        if key != "meta_lr":
            assert settings[key] == value, key
    assert settings["inner_optimizer"] == "adam"  # 'auto' resolved: Reptile's Adam(beta_1=0)
    assert settings["precision"] == "float32" and "imaml_lambda_reg" in settings
    with h5py.File(model, "r") as f:  # a JSON string attribute, readable without pymeta
        assert json.loads(f.attrs["pymeta_settings"]) == settings


def test_only_model_gives_the_result_of_all_flags_spelled_out(trained, caplog):
    model, data = trained
    common = ["--data_path", data, "--num_tasks", 12, "--batch", 6]
    with caplog.at_level(logging.INFO, logger="pymeta"):
        short = parse_args(["--model", model, *common])
    assert "settings from" in caplog.text and "--omniglot_protocol=allcharacters" in caplog.text
    assert "--notransductive" in caplog.text
    # recorded but not shown: iMAML's inner loop (a Reptile model) and RL's episodes (an Omniglot one)
    assert "--imaml_lambda_reg" not in caplog.text and "--horizon" not in caplog.text
    spelled = parse_args(["--model", model, *common, "--dataset", "omniglot", "--omniglot_protocol", "allcharacters",
                          "--metamodel", "reptile", "--num_output_classes", 3, "--num_train_samples_per_class", 1,
                          "--num_test_samples_per_class", 2, "--inner_optimizer", "adam", "--inner_lr", 0.003,
                          "--num_inner_iterations", 3, "--inner_batch_size", 2, "--notransductive",
                          "--precision", "float32"])
    assert short == spelled
    a, b = meta_test(short), meta_test(spelled)
    assert a["mean"] == b["mean"] and a["ci95"] == b["ci95"] and a["way"] == 3 and a["transductive"] is False
    # an explicit flag overrides the recorded value
    other_steps = parse_args(["--model", model, *common, "--num_inner_iterations", 1, "--transductive"])
    assert other_steps.num_inner_iterations == 1 and other_steps.transductive is True
    assert other_steps.num_output_classes == 3  # the others still from the file
    # ... and gives the number of the spelled-out command with that value (a result that merely differs
    # from `a` is no proof: on one thread 1 and 3 steps give the same accuracy on this tiny model)
    spelled_other = parse_args(["--model", model, *common, "--dataset", "omniglot", "--omniglot_protocol",
                                "allcharacters", "--metamodel", "reptile", "--num_output_classes", 3,
                                "--num_train_samples_per_class", 1, "--num_test_samples_per_class", 2,
                                "--inner_optimizer", "adam", "--inner_lr", 0.003, "--num_inner_iterations", 1,
                                "--inner_batch_size", 2, "--transductive", "--precision", "float32"])
    assert other_steps == spelled_other
    c, d = meta_test(other_steps), meta_test(spelled_other)
    assert c["num_inner_iterations"] == 1 and c["transductive"] is True
    assert (c["mean"], c["ci95"]) == (d["mean"], d["ci95"])


@pytest.mark.slow
def test_command_line_with_only_the_model(trained, tmp_path):
    """The brief's check, through the real command line: `--model` (and the data path) alone gives the
    number of the fully spelled-out command; an explicit flag changes it."""
    model, data = trained

    def run(*args):
        out = tmp_path / f"r{len(os.listdir(tmp_path))}.json"
        proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "meta_test.py"), "--model", str(model),
                               "--data_path", str(data), "--num_tasks", "10", "--batch", "5", "--output", str(out),
                               *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc, json.loads(out.read_text())

    short, r_short = run()
    assert "settings from" in short.stdout and "--num_output_classes=3" in short.stdout
    _, r_spelled = run("--dataset=omniglot", "--omniglot_protocol=allcharacters", "--metamodel=reptile",
                       "--num_output_classes=3", "--num_train_samples_per_class=1", "--num_test_samples_per_class=2",
                       "--inner_optimizer=adam", "--inner_lr=0.003", "--num_inner_iterations=3",
                       "--inner_batch_size=2", "--notransductive", "--precision=float32")
    assert r_short["mean"] == r_spelled["mean"] and r_short["way"] == 3
    _, r_override = run("--inner_lr=0.5")
    assert r_override["mean"] != r_short["mean"]


def test_an_old_model_file_falls_back_to_the_flag_defaults(tmp_path, caplog):
    import keras

    from pymeta.networks import make_sinusoid_model
    keras.utils.set_random_seed(0)
    old = save_model(make_sinusoid_model(), tmp_path / "old.h5")  # no settings, as before this feature
    assert load_settings(old) is None
    with caplog.at_level(logging.INFO, logger="pymeta"):
        c = parse_args(["--model", old, "--dataset", "sinusoid", "--num_tasks", 4, "--batch", 4])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "does not record how it was trained" in warnings[0].getMessage()
    assert (c.num_train_samples_per_class, c.inner_lr, c.num_inner_iterations) == (1, 0.01, 10)  # flag defaults
    assert meta_test(c)["num_tasks"] == 4
    with pytest.raises(FileNotFoundError, match="no model file"):
        parse_args(["--model", tmp_path / "missing.h5"])
    with pytest.raises(ValueError, match="--model is required"):
        parse_args(["--dataset", "sinusoid"])


def test_keras_files_record_settings_too(tmp_path):
    from pymeta.model_io import load_model
    from pymeta.networks import make_sinusoid_model
    path = save_model(make_sinusoid_model(), tmp_path / "m.keras", settings={"dataset": "sinusoid", "inner_lr": 0.1})
    assert load_settings(path) == {"dataset": "sinusoid", "inner_lr": 0.1}
    assert load_model(path).output_shape == (None, 1)


def test_the_step_count_chosen_on_validation_tasks_is_recorded_and_then_the_meta_tests_default(trained, tmp_path):
    """scripts/choose_test_steps.py: every candidate meta-tested on the validation split (each figure equal
    to a meta-test run on its own), the best recorded in the model file, whose weights stay as they were;
    `pymeta-metatest --model FILE` then adapts with it, with no other flag."""
    import shutil

    import numpy as np

    sys.path.insert(0, os.path.join(REPO, "scripts"))
    from choose_test_steps import choose
    from pymeta.model_io import load_model

    model, data = trained
    copy = str(tmp_path / "model.h5")
    shutil.copyfile(model, copy)
    c = parse_args(["--model", copy, "--data_path", str(data), "--num_tasks", "6", "--batch", "3"])
    best, results = choose(c, [0, 3])
    for steps, result in results.items():
        alone = meta_test(parse_args(["--model", model, "--data_path", str(data), "--num_tasks", "6", "--batch", "3",
                                      "--split", "val", "--num_inner_iterations", str(steps)]))
        assert result["mean"] == alone["mean"] and result["split"] == "val"
    assert results[best]["mean"] == max(r["mean"] for r in results.values())
    settings = load_settings(copy)
    assert settings["metatest_num_inner_iterations"] == best
    assert settings["metatest_steps_on_validation"]["3"]["num_tasks"] == 6
    assert {k: v for k, v in settings.items() if not k.startswith("metatest_")} == load_settings(model)
    for a, b in zip(load_model(copy).get_weights(), load_model(model).get_weights()):
        np.testing.assert_array_equal(a, b)
    again = parse_args(["--model", copy, "--data_path", str(data)])
    assert again.num_inner_iterations == best
    assert settings["metatest_num_train_samples_per_class"] == TRAINED["num_train_samples_per_class"]
    assert parse_args(["--model", copy, "--data_path", str(data), "--num_inner_iterations", "7"]).num_inner_iterations == 7


def test_the_shots_the_steps_were_chosen_with_are_recorded_too(trained, tmp_path):
    """A model trained with more shots than it is meta-tested with (Reptile on Mini-ImageNet: 15 per class,
    meta-tested 1-shot): choose_test_steps run with the meta-test's shots and inner batch records them, and
    `pymeta-metatest --model FILE` alone then meta-tests with exactly that protocol (the same figure as
    all the flags given by hand); flags given still win."""
    import shutil

    sys.path.insert(0, os.path.join(REPO, "scripts"))
    from choose_test_steps import choose

    model, data = trained
    copy = str(tmp_path / "model.h5")
    shutil.copyfile(model, copy)
    protocol = ["--num_train_samples_per_class", "3", "--inner_batch_size", "4"]
    c = parse_args(["--model", copy, "--data_path", str(data), "--num_tasks", "6", "--batch", "3", *protocol])
    best, _ = choose(c, [1, 2])
    settings = load_settings(copy)
    assert (settings["metatest_num_train_samples_per_class"], settings["metatest_inner_batch_size"]) == (3, 4)
    assert settings["num_train_samples_per_class"] == TRAINED["num_train_samples_per_class"]  # the training's
    alone = parse_args(["--model", copy, "--data_path", str(data), "--num_tasks", "6", "--batch", "3"])
    assert (alone.num_train_samples_per_class, alone.inner_batch_size, alone.num_inner_iterations) == (3, 4, best)
    by_hand = parse_args(["--model", model, "--data_path", str(data), "--num_tasks", "6", "--batch", "3",
                          "--num_inner_iterations", str(best), *protocol])
    assert meta_test(alone)["mean"] == meta_test(by_hand)["mean"]
    assert parse_args(["--model", copy, "--data_path", str(data),
                       "--num_train_samples_per_class", "2"]).num_train_samples_per_class == 2


@pytest.mark.parametrize("dataset, metamodel, shown, hidden", [
    ("omniglot", "imaml", ["omniglot_protocol", "imaml_lambda_reg", "imaml_inner", "transductive"],
     ["horizon", "gamma", "env_kwargs"]),
    ("miniimagenet", "fomaml", ["num_output_classes", "transductive", "precision"],
     ["omniglot_protocol", "imaml_lambda_reg", "imaml_inner", "horizon", "gae_lambda"]),
    ("sinusoid", "reptile", ["num_train_samples_per_class", "inner_optimizer", "inner_lr"],
     ["num_output_classes", "transductive", "omniglot_protocol", "imaml_inner", "gamma"]),
    ("navigation2d", "maml", ["horizon", "gamma", "gae_lambda", "inner_lr"],
     ["num_output_classes", "transductive", "imaml_lambda_reg", "omniglot_protocol"]),
])
def test_the_settings_line_shows_what_matters_for_the_model(dataset, metamodel, shown, hidden):
    c = MetaTestConfig(dataset=dataset, metamodel=metamodel)
    assert [name for name in shown if not setting_matters(c, name)] == []
    assert [name for name in hidden if setting_matters(c, name)] == []


def test_choose_test_steps_refuses_candidates_that_are_not_step_counts(trained):
    """'5,abc' ended in int()'s message, naming no flag."""
    model, data = trained
    for candidates in ("5,abc", "-1,5", ",", "2.5"):
        proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "choose_test_steps.py"), "--model",
                               str(model), "--data_path", str(data), "--num_tasks", "4", "--candidates", candidates],
                              capture_output=True, text=True, cwd=REPO, timeout=300)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and errors == [
            f"error: --candidates must be step counts >= 0, e.g. 5,10,20; got {candidates!r}"], proc.stderr[-2000:]
