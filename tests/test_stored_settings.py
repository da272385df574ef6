"""Settings a model file records are input from strangers (issue 38, items 1 and 7; issue 37: a missing
file is reported before TensorFlow starts). `pymeta.config.stored.read_stored_settings` reads them
without TensorFlow, within bounds, and checks each one with its flag's check; `env_kwargs` from a file
may set only the keywords declared for the dataset. Every bad case below ends with exit code 2 and ONE
line on stderr naming the file or flag and the fix, and without TensorFlow imported (the reason it
takes about a second, not 20)."""

import json
import math
import os
import shutil
import subprocess
import sys
import time
import tracemalloc
import zipfile

import h5py
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import REPO
from pymeta.config import MetaTestConfig, RunConfig, check_config, check_metatest_config, check_ranks, env_kwargs
from pymeta.config.bounded_json import loads_bounded, nesting_depth
from pymeta.config.checks import check_field
from pymeta.config.records import CHOSEN_TEST_STEPS, METATEST_PROTOCOL, MODEL_SETTINGS
from pymeta.config.stored import (StoredSettingsError, check_stored_settings, read_stored_settings,
                                  read_unchecked_settings)

OMNIGLOT = {"dataset": "omniglot", "metamodel": "fomaml", "inner_lr": 0.4, "num_output_classes": 5,
            "num_train_samples_per_class": 1, "num_test_samples_per_class": 15, "inner_batch_size": -1,
            "num_inner_training_iterations": 5}
NAV = {"dataset": "navigation2d", "metamodel": "maml", "inner_lr": 0.5, "horizon": 100, "gamma": 0.99}
CHEETAH = {"dataset": "halfcheetah_vel", "metamodel": "maml", "inner_lr": 0.1, "horizon": 200, "env_kwargs": ""}
WRAPPER = ("import atexit, runpy, sys\n"
           "atexit.register(lambda: print('tensorflow imported:', 'tensorflow' in sys.modules))\n"
           "script = sys.argv[1]\n"
           "sys.argv = sys.argv[1:]\n"
           "runpy.run_module(script, run_name='__main__') if not script.endswith('.py') else "
           "runpy.run_path(script, run_name='__main__')\n")


def h5_model(path, text):
    """A stand-in model file: an HDF5 file whose `pymeta_settings` attribute is `text` (the reader
    needs nothing else)."""
    with h5py.File(path, "w") as f:
        f.attrs["pymeta_settings"] = text
    return str(path)


def settings_file(tmp_path, settings, name="m.h5"):
    return h5_model(tmp_path / name, settings if isinstance(settings, str) else json.dumps(settings))


def run_cli(program, *args, env=None, timeout=60):
    """(exit code, stderr lines, stdout, seconds) of `program` (a script path or a module) run with
    `args`; stdout ends with whether TensorFlow was imported."""
    environment = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", WRAPPER, program, *map(str, args)], capture_output=True, text=True,
                         cwd=REPO, env=environment, timeout=timeout)
    return out.returncode, [line for line in out.stderr.splitlines() if line.strip()], out.stdout, \
        time.perf_counter() - start


def assert_one_line_before_tensorflow(code, stderr, stdout, *words):
    assert code == 2, (code, stderr, stdout)
    assert len(stderr) == 1 and stderr[0].startswith("error: "), stderr
    for word in words:
        assert word in stderr[0], (word, stderr[0])
    assert stdout.rstrip().endswith("tensorflow imported: False"), stdout


META_TEST = os.path.join("scripts", "meta_test.py")


# --- item 1: a stored setting of the wrong type or value ---------------------------------------------------
@pytest.mark.parametrize("settings, words", [
    ({**OMNIGLOT, "inner_lr": "0.1"}, ["stored setting inner_lr", "--inner_lr must be a number, got '0.1'",
                                       "pass --inner_lr yourself"]),
    ('{"dataset": "omniglot", "inner_lr": 1' + "0" * 400 + "}", ["inner_lr", "a number in float range"]),
    ({**OMNIGLOT, "inner_lr": -1.0}, ["inner_lr", "--inner_lr must be a finite number > 0, got -1.0"]),
    ('{"dataset": "omniglot", "inner_lr": NaN}', ["not valid JSON", "NaN is not a number JSON allows"]),
    ({**NAV, "horizon": "200"}, ["stored setting horizon", "--horizon must be an integer"]),
    ({**NAV, "horizon": -3}, ["stored setting horizon", "--horizon must be >= 1"]),
    ({**OMNIGLOT, "num_inner_training_iterations": 1e12},
     ["stored setting num_inner_training_iterations", "must be an integer", "pass --num_inner_iterations"]),
    ({**OMNIGLOT, CHOSEN_TEST_STEPS: -4}, [CHOSEN_TEST_STEPS, "--num_inner_iterations must be >= 0"]),
    ({**OMNIGLOT, "metatest_num_train_samples_per_class": 0},
     ["stored setting metatest_num_train_samples_per_class", "pass --num_train_samples_per_class yourself"]),
    ({**OMNIGLOT, "metatest_inner_batch_size": "10"}, ["stored setting metatest_inner_batch_size", "an integer"]),
    ({**OMNIGLOT, "dataset": "mnist"}, ["stored setting dataset", "unknown --dataset='mnist'"]),
    ({**OMNIGLOT, "transductive": "yes"}, ["stored setting transductive", "must be true or false"]),
    ({**OMNIGLOT, "meta_batch_size": 0}, ["stored setting meta_batch_size", "must be >= 1",
                                          "use a model file written by pymeta-train"]),
    ("5", ["stored settings must be a JSON object, got int"]),
    ('"omniglot"', ["stored settings must be a JSON object, got str"]),
    ("not json", ["stored settings: not valid JSON"]),
    ('{"dataset": ' + "[" * 100000 + "]" * 100000 + "}", ["nested deeper than 32 levels"]),
    ({**CHEETAH, "env_kwargs": "[1, 2]"}, ["stored setting env_kwargs", "must be a JSON object"]),
    ({**CHEETAH, "env_kwargs": 5}, ["stored setting env_kwargs", "--env_kwargs must be text"]),
    ({**CHEETAH, "env_kwargs": '{"xml_file": "/etc/passwd"}'},
     ["xml_file is not a keyword a model file may set", "pass --env_kwargs on the command line"]),
    ({**CHEETAH, "env_kwargs": '{"render_mode": "human"}'}, ["render_mode is refused", "never renders"]),
    ({**CHEETAH, "env_kwargs": '{"frame_skip": 1e9}'}, ["frame_skip must be an integer in [1, 50], got 1000000000.0"]),
    ({**CHEETAH, "env_kwargs": '{"frame_skip": "5"}'}, ["frame_skip must be an integer in [1, 50], got '5'"]),
])
def test_a_bad_stored_setting_is_one_line_naming_the_file_and_the_setting(tmp_path, settings, words):
    path = settings_file(tmp_path, settings)
    with pytest.raises(StoredSettingsError) as e:
        read_stored_settings(path)
    message = str(e.value)
    assert message.startswith(f"{path}: ") and "\n" not in message and len(message) < 600, message
    for word in words:
        assert word in message, (word, message)


def test_the_meta_test_script_reports_a_bad_stored_setting_before_tensorflow(tmp_path):
    path = settings_file(tmp_path, {**OMNIGLOT, "inner_lr": "0.1"})
    code, stderr, stdout, _ = run_cli(META_TEST, "--model", path)
    assert_one_line_before_tensorflow(code, stderr, stdout, path, "inner_lr", "pass --inner_lr yourself")


def test_a_training_inner_batch_larger_than_the_meta_test_support_set_is_one_line_before_tensorflow(tmp_path):
    """Reptile trains with 15 shots and an inner batch of 10; meta-tested 1-shot (5 support examples) with the
    file's inner batch it cannot run: one line naming the flag and the fix, before TensorFlow (it took 25 s
    and named no flag when the task sampler found it)."""
    path = settings_file(tmp_path, {**OMNIGLOT, "metamodel": "reptile", "num_train_samples_per_class": 15,
                                    "inner_batch_size": 10})
    data = tmp_path / "omniglot.pkl"
    data.write_bytes(b"not read")
    code, stderr, stdout, _ = run_cli(META_TEST, "--model", path, "--data_path", data,
                                      "--num_train_samples_per_class", "1")
    assert code == 2 and stdout.rstrip().endswith("tensorflow imported: False"), (code, stderr, stdout)
    assert stderr[-1] == ("error: --inner_batch_size=10 (given, or read from the model file) is not possible with a "
                          "support set of 5 examples: use 1..5, or -1 for all of them"), stderr
    code, stderr, stdout, _ = run_cli(META_TEST, "--model", path, "--data_path", data,
                                      "--num_train_samples_per_class", "1", "--inner_batch_size", "6")
    assert code == 2 and "--inner_batch_size=6 (given, or read from the model file)" in stderr[-1], stderr


def test_env_kwargs_a_file_may_not_set_never_reach_gymnasium(tmp_path):
    path = settings_file(tmp_path, {**CHEETAH, "env_kwargs": '{"xml_file": "/etc/passwd"}'})
    code, stderr, stdout, _ = run_cli("pymeta.cli.metatest", "--model", path)
    assert_one_line_before_tensorflow(code, stderr, stdout, path, "xml_file")


def test_a_flag_given_overrides_a_bad_stored_value_which_is_then_never_used(tmp_path):
    path = settings_file(tmp_path, {**OMNIGLOT, "inner_lr": "0.1", "num_inner_training_iterations": 1e12})
    s = read_stored_settings(path, given={"inner_lr", "num_inner_iterations"})
    assert "inner_lr" not in s and "num_inner_training_iterations" not in s and s["dataset"] == "omniglot"


def test_good_settings_come_back_typed_and_unknown_ones_are_dropped(tmp_path):
    path = settings_file(tmp_path, {**OMNIGLOT, "inner_lr": 1, "something_new": [1, 2], "pymeta_version": "0.3",
                                    CHOSEN_TEST_STEPS: 10})
    s = read_stored_settings(path)
    assert s["inner_lr"] == 1.0 and isinstance(s["inner_lr"], float)
    assert "something_new" not in s and s["pymeta_version"] == "0.3" and s[CHOSEN_TEST_STEPS] == 10
    assert read_stored_settings(h5_model_without_settings(tmp_path / "plain.h5")) is None


def h5_model_without_settings(path):
    with h5py.File(path, "w") as f:
        f.create_dataset("w", data=[1.0])
    return str(path)


def test_keras_zip_and_checkpoint_settings_are_checked_too(tmp_path):
    keras_file = tmp_path / "m.keras"
    with zipfile.ZipFile(keras_file, "w") as z:
        z.writestr("config.json", "{}")
        z.writestr("pymeta_settings.json", json.dumps({**NAV, "gamma": 7}))
    with pytest.raises(StoredSettingsError, match=r"m\.keras: its stored setting gamma is refused \(--gamma must "
                                                  r"be in \(0, 1\], got 7\.0\)"):
        read_stored_settings(keras_file)
    huge = tmp_path / "huge.keras"
    with zipfile.ZipFile(huge, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("pymeta_settings.json", " " * (4 << 20))  # 4 MiB of blanks: about 4 KB compressed
    with pytest.raises(StoredSettingsError, match="declare 4,194,304 bytes, more than"):
        read_stored_settings(huge)
    checkpoint = tmp_path / "ckpt-00000010.h5"
    with h5py.File(checkpoint, "w") as f:
        f.create_group("theta")
        f.attrs["config"] = json.dumps({**OMNIGLOT, "inner_lr": "fast", "seed": 3})
    with pytest.raises(StoredSettingsError, match="stored setting inner_lr is refused"):
        read_stored_settings(checkpoint)


def test_every_model_file_of_the_zoo_passes_the_reader():
    files = [os.path.join(folder, name) for folder, _, names in os.walk(os.path.join(REPO, "pretrained"))
             for name in names if name.endswith((".h5", ".keras"))]
    assert files
    for path in files:
        read_stored_settings(path)  # raises for a refused one
        assert read_unchecked_settings(path) == _plain_read(path), path  # the one reader reads what is there


def _plain_read(path):
    """The record read here with plain h5py / zipfile and json (independent of pymeta's reader)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            return json.loads(z.read("pymeta_settings.json")) if "pymeta_settings.json" in names else None
    with h5py.File(path, "r") as f:
        if "theta" in f and "config" in f.attrs:  # a checkpoint: its run config's model settings
            config = json.loads(f.attrs["config"])
            return {k: config[k] for k in MODEL_SETTINGS if k in config}
        text = f.attrs.get("pymeta_settings")
    return None if text is None else json.loads(text)


def test_a_bad_stored_setting_is_reported_before_tensorflow_by_choose_test_steps(tmp_path):
    path = settings_file(tmp_path, {**OMNIGLOT, "horizon": "x"})
    code, stderr, stdout, _ = run_cli(os.path.join("scripts", "choose_test_steps.py"), "--model", path)
    assert_one_line_before_tensorflow(code, stderr, stdout, path, "horizon")


# --- issue 37: a missing model or data file, before TensorFlow -------------------------------------------
def test_a_missing_model_file_is_one_line_before_tensorflow(tmp_path):
    code, stderr, stdout, _ = run_cli(META_TEST, "--model", tmp_path / "none.h5")
    assert_one_line_before_tensorflow(code, stderr, stdout, f"no model file at '{tmp_path / 'none.h5'}'")


def test_a_missing_data_file_of_the_model_is_one_line_before_tensorflow(tmp_path):
    path = settings_file(tmp_path, OMNIGLOT)
    code, stderr, stdout, seconds = run_cli(META_TEST, "--model", path, "--data_path", tmp_path / "none.pkl")
    assert_one_line_before_tensorflow(code, stderr, stdout, "no omniglot data file", str(tmp_path / "none.pkl"),
                                      "make_omniglot_dataset.py")


def test_pymeta_train_reports_a_missing_data_file_before_tensorflow(tmp_path):
    code, stderr, stdout, _ = run_cli("pymeta.cli.train", "--dataset=omniglot", f"--data_path={tmp_path}/none.pkl",
                                      f"--model_save_filename={tmp_path}/out/m.h5")
    assert_one_line_before_tensorflow(code, stderr, stdout, "no omniglot data file", "--data_path")
    assert not os.path.exists(tmp_path / "out")


# --- item 7: --test_tasks, --env_kwargs, a meta-batch smaller than the MPI ranks -----------------------------
def test_a_deeply_nested_test_tasks_file_is_one_line_before_tensorflow(tmp_path):
    path = settings_file(tmp_path, NAV)
    tasks = tmp_path / "tasks.json"
    tasks.write_text("[" * 200000 + "]" * 200000)
    code, stderr, stdout, _ = run_cli(META_TEST, "--model", path, "--test_tasks", tasks)
    assert_one_line_before_tensorflow(code, stderr, stdout, f"--test_tasks: {tasks}", "nested deeper than 32")


@pytest.mark.parametrize("text, words", [
    ('{"goal": [0.1, 0.2]}', "must hold a list of at least 2 task parameters"),
    ('[[0.1, 0.2], [0.3, "x"', "not valid JSON"),
    (b"\xff\xfe[]", "not UTF-8 text"),
])
def test_a_bad_test_tasks_file_is_one_line(tmp_path, text, words):
    tasks = tmp_path / "tasks.json"
    tasks.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError, match="^--test_tasks: ") as e:
        check_metatest_config(MetaTestConfig(model="m.h5", dataset="navigation2d", test_tasks=str(tasks)))
    assert words in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("kwargs, words", [
    ('{"frame_skip": "5"}', "--env_kwargs: frame_skip must be an integer in [1, 50], got '5'"),
    ('{"frame_skip": 0}', "--env_kwargs: frame_skip must be an integer in [1, 50], got 0"),
    ('{"forward_reward_weight": true}', "forward_reward_weight must be a number in [-1000, 1000], got True"),
    ('{"render_mode": "human"}', "--env_kwargs: render_mode is refused"),
    ('{"a": ' * 50 + "1" + "}" * 50, "--env_kwargs must be a JSON object"),
])
def test_a_bad_env_kwargs_flag_is_one_line_before_tensorflow(tmp_path, kwargs, words):
    code, stderr, stdout, _ = run_cli("pymeta.cli.train", "--dataset=halfcheetah_vel", f"--env_kwargs={kwargs}",
                                      f"--model_save_filename={tmp_path}/m.h5")
    assert_one_line_before_tensorflow(code, stderr, stdout, words)


def test_the_command_line_may_pass_keywords_a_model_file_may_not():
    """The user's own choice: any keyword but the rendering ones, the declared ones still typed."""
    c = RunConfig(dataset="halfcheetah_dir", metamodel="maml",
                  env_kwargs='{"xml_file": "my_cheetah.xml", "frame_skip": 1, "ctrl_cost_weight": 0.05}')
    check_config(c)
    assert env_kwargs(c)["xml_file"] == "my_cheetah.xml"
    with pytest.raises(ValueError, match="xml_file is not a keyword a model file may set for halfcheetah_dir"):
        env_kwargs(c, from_file=True)
    ant = RunConfig(dataset="ant_dir", metamodel="maml", env_kwargs='{"healthy_z_range": [0.3, 0.2]}')
    with pytest.raises(ValueError, match=r"healthy_z_range must be a pair \[low, high\] of numbers, low < high,"):
        check_config(ant)


def test_an_rl_meta_batch_smaller_than_the_ranks_is_refused_before_tensorflow(tmp_path):
    """Under an MPI launch (the launcher's PMI_SIZE / OMPI_COMM_WORLD_SIZE), before mpi4py or TF start;
    only rank 0 writes the line (every rank finds the same)."""
    args = ["pymeta.cli.train", "--dataset=navigation2d", "--metamodel=fomaml", "--meta_batch_size=1",
            f"--model_save_filename={tmp_path}/m.h5"]
    code, stderr, stdout, _ = run_cli(*args, env={"PMI_SIZE": "2", "PMI_RANK": "0"})
    assert_one_line_before_tensorflow(code, stderr, stdout, "--meta_batch_size=1", "2 MPI ranks",
                                      "--meta_batch_size >= 2")
    code, stderr, stdout, _ = run_cli(*args, env={"PMI_SIZE": "2", "PMI_RANK": "1"})
    assert code == 2 and stderr == [] and "tensorflow imported: False" in stdout
    check_ranks(RunConfig(dataset="sinusoid", meta_batch_size=1), 2)  # supervised: a rank may have no task
    check_ranks(RunConfig(dataset="navigation2d", metamodel="fomaml", meta_batch_size=2), 2)


def test_an_rl_meta_batch_smaller_than_the_ranks_under_real_mpiexec(tmp_path):
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        pytest.skip("mpiexec is not on PATH (pip install mpich, or load your cluster's MPI)")
    cmd = [mpiexec, "-n", "2", sys.executable, "-c", WRAPPER, "pymeta.cli.train", "--dataset=navigation2d",
           "--metamodel=fomaml", "--meta_batch_size=1", f"--model_save_filename={tmp_path}/m.h5"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120,
                         env=dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2"))
    errors = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(errors) == 1 and "--meta_batch_size=1 leaves" in errors[0], out.stderr
    assert out.stdout.count("tensorflow imported: False") == 2, out.stdout


# --- the checks are one source of truth --------------------------------------------------------------------
def test_a_stored_value_and_the_flag_meet_the_same_check():
    for name, value in (("inner_lr", 0.0), ("num_output_classes", 0), ("imaml_cg_tol", -1.0),
                        ("seqfomaml_variant", "all")):
        with pytest.raises(ValueError) as flag:
            check_field(RunConfig(**{name: value}), name)
        with pytest.raises(StoredSettingsError) as stored:
            check_stored_settings("m.h5", {name: value})
        assert str(flag.value) in str(stored.value)


def test_the_type_check_covers_the_python_api_too():
    with pytest.raises(ValueError, match=r"^--horizon must be an integer"):
        check_config(RunConfig(dataset="navigation2d", metamodel="maml", horizon="200"))
    with pytest.raises(ValueError, match=r"^--meta_batch_size must be an integer of at most 19 digits"):
        check_config(RunConfig(dataset="sinusoid", meta_batch_size=10 ** 30))


def test_nesting_depth_ignores_brackets_in_strings():
    assert nesting_depth('{"a": "[[[[", "b": [[1]]}') == 3
    assert nesting_depth('"\\"[[["') == 0
    with pytest.raises(ValueError, match="x: JSON nested deeper than 3 levels"):
        loads_bounded("[[[[1]]]]", "x", max_depth=3)


# --- property: random JSON values as stored settings ---------------------------------------------------------
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-10 ** 400, max_value=10 ** 400),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
                    st.sampled_from(["omniglot", "navigation2d", "halfcheetah_vel", "ant_dir", "sinusoid", "maml",
                                     "-1", "0.1", '{"frame_skip": 1}', '{"xml_file": "/etc/passwd"}']))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=20)
SETTINGS = st.dictionaries(st.sampled_from(sorted(MODEL_SETTINGS) + sorted(METATEST_PROTOCOL) + ["pymeta_version", "other"]),
                           JSON_VALUES, max_size=12)


def _check_read(path):
    """read_stored_settings(path): validated settings (each passes its flag's check) or one line."""
    try:
        s = read_stored_settings(path)
    except StoredSettingsError as e:
        assert "\n" not in str(e) and str(e).startswith(f"{path}: ") and len(str(e)) < 1000, str(e)
        return
    base = RunConfig(dataset=s.get("dataset", "omniglot"))
    for key, value in s.items():
        if key in MODEL_SETTINGS:
            check_field(RunConfig(**{**vars(base), key: value}), key)
        elif key in METATEST_PROTOCOL:
            check_field(MetaTestConfig(dataset=base.dataset, **{METATEST_PROTOCOL[key]: value}), METATEST_PROTOCOL[key])


# the budgets are far above what a case takes (milliseconds, a few MB), so that a loaded machine cannot make
# the test flaky, and far below a hang or a runaway allocation
TIME_BUDGET_S, MEMORY_BUDGET = 5.0, 64 << 20


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(stored=st.one_of(SETTINGS, JSON_VALUES), nesting=st.integers(0, 3000))
def test_random_json_values_as_stored_settings_give_checked_settings_or_one_line(tmp_path, stored, nesting):
    text = json.dumps(stored)  # NaN / Infinity / huge integers included: json.dumps writes them
    if nesting:
        text = "[" * nesting + text + "]" * nesting
    path = h5_model(tmp_path / "random.h5", text)
    tracemalloc.start()
    begin = time.perf_counter()
    try:
        _check_read(path)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    seconds = time.perf_counter() - begin
    assert seconds < TIME_BUDGET_S and peak < MEMORY_BUDGET, (seconds, peak)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet='[]{}",:0123456789.eE-+ \\tnulfasrNIy', max_size=400))
def test_random_json_like_text_parses_or_is_one_line(text):
    try:
        value = loads_bounded(text, "t")
    except ValueError as e:
        assert str(e).startswith("t: ") and "\n" not in str(e)
        return
    assert nesting_depth(json.dumps(value)) <= 32
    if isinstance(value, float):
        assert math.isfinite(value)


@pytest.mark.parametrize("dataset,written", [("omniglot", "datasets/omniglot/omniglot.pkl"),
                                             ("miniimagenet", "datasets/miniimagenet/miniimagenet.h5")])
def test_missing_data_file_names_what_the_preparation_script_writes(dataset, written, tmp_path, monkeypatch):
    """The file the message names is the one scripts/make_<dataset>_dataset.py writes by default (its
    --output default, read from the script's own help text)."""
    from pymeta.registry import check_data_file
    script = os.path.join(REPO, "scripts", f"make_{dataset}_dataset.py")
    with open(script) as f:
        assert f"default: {written}" in f.read()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as e:
        check_data_file(dataset)
    assert f"which writes {written} " in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_a_model_or_data_path_that_is_not_a_file_is_named_so_before_tensorflow(tmp_path, kind):
    """A folder or fifo given as a file was "not found" (or, read, would block): what it is, in one line."""
    path = tmp_path / "x.h5"
    os.mkdir(path) if kind == "folder" else os.mkfifo(path)
    code, stderr, stdout, _ = run_cli(META_TEST, "--model", path)
    assert_one_line_before_tensorflow(code, stderr, stdout, f"'{path}' is a {kind}, not a model file")
    code, stderr, stdout, _ = run_cli("pymeta.cli.train", "--dataset=omniglot", f"--data_path={path}",
                                      f"--model_save_filename={tmp_path}/out/m.h5")
    assert_one_line_before_tensorflow(code, stderr, stdout, f"'{path}' is a {kind}, not the omniglot data file")
    code, stderr, stdout, _ = run_cli("pymeta.cli.train", "--dataset=sinusoid", f"--init_model={path}",
                                      f"--model_save_filename={tmp_path}/out/m.h5")
    assert_one_line_before_tensorflow(code, stderr, stdout, f"--init_model: '{path}' is a {kind}, not a model file")
    assert not os.path.exists(tmp_path / "out")
    from pymeta.data import DatasetFileError, load_omniglot
    with pytest.raises(DatasetFileError, match=f"is a {kind}, not a dataset file"):
        load_omniglot(path)
