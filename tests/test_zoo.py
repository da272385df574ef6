"""The model zoo: pretrained/index.json against the committed model files and meta-test JSONs, pymeta.zoo's
look-ups and one-line errors, the generated docs page, and re-measured rows."""

import copy
import dataclasses
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys

import h5py
import numpy as np
import pytest

from pymeta import zoo
from pymeta.config import MetaTestConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INDEX = zoo.load_index()
ENTRIES = {m["name"]: m for m in INDEX["models"]}
RESULTS = [(m["name"], r["key"]) for m in INDEX["models"] for r in m["results"]]


def _result(name, key):
    return next(r for r in ENTRIES[name]["results"] if r["key"] == key)


def _env():
    return {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_index_lists_the_headline_models():
    names = zoo.list_models()
    assert names == list(ENTRIES) and len(set(names)) == len(names)
    benchmarks = {m["benchmark"] for m in INDEX["models"]}
    assert benchmarks == {"omniglot", "miniimagenet", "navigation2d", "halfcheetah_vel", "halfcheetah_dir", "ant_dir"}
    assert "omniglot_imaml_5w1s" in names and "miniimagenet_fomaml_5w1s" in names
    for m in INDEX["models"]:  # headline models sit at their benchmark's level, not in a study
        assert "/studies/" not in m["path"]
        folder = m["benchmark"] if m["benchmark"] in ("omniglot", "miniimagenet") else f"rl/{m['benchmark']}"
        assert os.path.dirname(m["path"]) == f"pretrained/{folder}"


@pytest.mark.parametrize("name", list(ENTRIES))
def test_model_file_is_hdf5_with_the_indexed_settings(name):
    entry = ENTRIES[name]
    path = zoo.pretrained_path(name)
    assert os.path.isabs(path) and path == os.path.join(REPO, entry["path"])
    with h5py.File(path, "r") as f:  # a Keras HDF5 model file, read without TensorFlow
        assert "model_config" in f.attrs and "model_weights" in f
        stored = json.loads(f.attrs["pymeta_settings"])
    assert stored["dataset"] == entry["dataset"]
    for key, value in entry["settings"].items():
        assert stored[key] == value, (name, key)
    for r in entry["results"]:  # the precision a figure was measured in is the one its meta-test computes in
        assert r["measured_on"]["precision"] == r["protocol"].get("precision", stored.get("precision", "float32"))
    if entry["training"]["history"]:
        with open(os.path.join(REPO, entry["training"]["history"])) as f:
            history = json.load(f)["history"]
        assert history[-1]["iteration"] <= entry["training"]["meta_iterations"]


@pytest.mark.parametrize("name, key", RESULTS)
def test_result_agrees_with_its_metatest_json(name, key):
    entry, r = ENTRIES[name], _result(name, key)
    proto = r["protocol"]
    with open(os.path.join(REPO, r["json"])) as f:
        d = json.load(f)
    assert os.path.dirname(r["json"]) == os.path.dirname(entry["path"])  # committed beside the model
    assert os.path.basename(d["model"]) == os.path.basename(entry["path"])
    assert d["dataset"] == proto["dataset"] == entry["dataset"]
    assert d["num_tasks"] == proto["num_tasks"] and d["num_inner_iterations"] == proto["num_inner_iterations"]
    if r["metric"] == "accuracy_percent":
        assert d["metric"] == "accuracy_percent"
        assert d["shot"] == proto["num_train_samples_per_class"] and d["way"] == proto["num_output_classes"]
        assert d["split"] == proto.get("split", "test") and d["transductive"] == proto.get("transductive", True)
        assert round(d["mean"], 2) == r["mean"] and round(d["ci95"], 2) == r["ci95"]
        if entry["settings"]["metamodel"] == "reptile":  # adapted from the kept Adam state, as trained
            assert d["inner_optimizer_state"] == "saved with the model"
    else:
        assert [round(x, 2) for x in d["returns_by_step"]] == r["mean"]
        assert [round(x, 2) for x in d["ci95_by_step"]] == r["ci95"]
        assert np.asarray(d["returns_by_task"]).shape == (proto["num_tasks"], proto["num_inner_iterations"] + 1)
        assert d["episodes_per_task"] == proto["episodes_per_task"]
        assert d["step_sizes"] == [float(s) for s in proto["step_sizes"].split(",")]
        assert d["restart_episodes"] == proto.get("restart_episodes", False)
        assert d["init"] == proto.get("init", "trained") and d.get("repeats", 1) == proto["repeats"]
        if proto["test_tasks"]:
            with open(os.path.join(REPO, proto["test_tasks"])) as f:
                assert d["task_params"] == json.load(f)[:proto["num_tasks"]]


@pytest.mark.parametrize("name, key", RESULTS)
def test_flags_and_command_give_the_protocol(name, key):
    entry, r = ENTRIES[name], _result(name, key)
    flags = zoo.metatest_flags(name, key)
    fields = {f.name: f for f in dataclasses.fields(MetaTestConfig)}
    assert set(flags) <= set(fields)
    assert flags["model"] == zoo.pretrained_path(name) and os.path.isfile(flags["model"])
    assert {k: v for k, v in flags.items() if k not in ("model", "test_tasks")} == \
        {k: v for k, v in r["protocol"].items() if k != "test_tasks"}
    if r["protocol"].get("test_tasks"):
        assert os.path.isfile(flags["test_tasks"])
    # the stored command is the protocol's: every flag it gives parses to the protocol's value, and
    # the flags it leaves out are at the meta-test's default
    assert r["command"] == zoo.command_for(entry["path"], r["protocol"])
    args = shlex.split(r["command"])
    assert args[:4] == ["python", "scripts/meta_test.py", "--model", entry["path"]]
    given, rest = {}, args[4:]
    while rest:
        flag = rest.pop(0)
        assert flag.startswith("--")
        name_ = flag[2:]
        if name_ in fields and fields[name_].type is bool:
            given[name_] = True
        elif name_.startswith("no") and name_[2:] in fields and fields[name_[2:]].type is bool:
            given[name_[2:]] = False
        else:
            given[name_] = fields[name_].type(rest.pop(0))
    for k, v in r["protocol"].items():
        assert given.get(k, fields[k].default) == v, (k, v)
    assert set(given) <= set(r["protocol"])
    assert zoo.metatest_command(name, key) == r["command"]


MINIIMAGENET_RESULTS = [(n, k) for n, k in RESULTS if ENTRIES[n]["benchmark"] == "miniimagenet"]


@pytest.mark.parametrize("name, key", MINIIMAGENET_RESULTS)
def test_the_model_file_alone_gives_the_miniimagenet_rows_protocol(name, key, tmp_path):
    """The command printed beside each Mini-ImageNet row, `pymeta-metatest --model FILE --num_tasks 600`,
    needs no other flag: the committed file records the shots, steps (chosen on validation), inner batch."""
    from pymeta.cli.metatest import parse_args

    data = tmp_path / "miniimagenet.h5"  # the protocol is resolved before anything reads the data
    data.write_bytes(b"")
    c = parse_args(["--model", zoo.pretrained_path(name), "--num_tasks", "600", "--data_path", str(data)])
    protocol = _result(name, key)["protocol"]
    assert {k: getattr(c, k) for k in protocol} == protocol
    page = open(os.path.join(REPO, "docs", "results", "miniimagenet.md")).read()
    assert f"pymeta-metatest --model {ENTRIES[name]['path']} --num_tasks 600\n" in page


def _figures(result):
    """Every mean ± CI a zoo result states, as the README prints them (2 decimals)."""
    means, cis = result["mean"], result["ci95"]
    pairs = zip(means, cis) if isinstance(means, list) else [(means, cis)]
    return {(f"{m:.2f}", f"{c:.2f}") for m, c in pairs}


def test_readme_results_are_the_zoo_figures():
    """Each figure of the README's results table is one its model's zoo entry states (which the tests above
    tie to the meta-test JSONs): a README number always has a committed model and command behind it."""
    by_path = {m["path"]: m for m in INDEX["models"]}
    rows = 0
    for line in open(os.path.join(REPO, "README.md"), encoding="utf-8"):
        model = re.search(r"\| `([^`]+\.h5)` \|\s*$", line)
        if not line.startswith("|") or not model:
            continue
        entry = by_path[f"pretrained/{model.group(1)}"]
        ours = line.split("|")[3]
        given = {(m.replace("\u2212", "-"), c) for m, c in re.findall(r"([\u2212-]?\d+\.\d+) ± (\d+\.\d+)", ours)}
        stated = set().union(*(_figures(r) for r in entry["results"]))
        assert given and given <= stated, (entry["name"], given - stated)
        rows += 1
    assert rows >= 10


def test_default_result_is_the_first():
    assert zoo.metatest_flags("omniglot_imaml_5w1s") == zoo.metatest_flags("omniglot_imaml_5w1s", "1shot")
    flags = zoo.metatest_flags("omniglot_imaml_5w1s")
    # the row's protocol, not the model file's 5 queries per class (issue #37)
    assert flags["num_test_samples_per_class"] == 15 and flags["num_tasks"] == 1000
    assert flags["num_inner_iterations"] == 5 and flags["seed"] == 0


def test_imaml_row_records_what_it_was_measured_on():
    """The iMAML 1-shot row was measured in bfloat16 on a CPU computing it natively; on an AVX2-only CPU
    (bfloat16 emulated) it gave 98.48 ± 0.18, which the entry and the zoo page say."""
    assert zoo.measured_on("omniglot_imaml_5w1s") == {"precision": "mixed_bfloat16", "cpu": "avx512_bf16"}
    assert zoo.measured_on("omniglot_imaml_5w1s", "5shot")["precision"] == "mixed_bfloat16"
    assert "98.48 ± 0.18" in ENTRIES["omniglot_imaml_5w1s"]["notes"]
    page = open(os.path.join(REPO, "docs", "model_zoo.md")).read()
    assert "98.48 ± 0.18 on an AVX2-only CPU" in page
    assert all(r["measured_on"]["cpu"] in (None, *zoo.CPU_KINDS) for m in INDEX["models"] for r in m["results"])


def _pretrained_arguments(text):
    """The zoo names given to --pretrained in `text` (lower-case names with an underscore; not NAME:KEY)."""
    return re.findall(r"--pretrained[ =]([a-z0-9]+_\w*(?::\w+)?)", text)


def test_every_pretrained_name_the_docs_give_is_a_row():
    """`--pretrained NAME[:RESULT]` in the README and the docs names a model and result of the index."""
    files = [os.path.join(REPO, "README.md")] + [os.path.join(folder, n) for folder, _, names in
                                                  os.walk(os.path.join(REPO, "docs")) for n in names if n.endswith(".md")]
    named = 0
    for f in files:
        for arg in _pretrained_arguments(open(f, encoding="utf-8").read()):
            name, _, result = arg.partition(":")
            zoo.metatest_flags(name, result or None)  # a one-line ValueError for an unknown name or result
            named += 1
    assert named > len(RESULTS)  # the zoo page names every row


def test_unknown_names_are_one_line_errors():
    with pytest.raises(ValueError) as e:
        zoo.model_entry("omniglot_imaml")
    message = str(e.value)
    assert "\n" not in message and "unknown pretrained model 'omniglot_imaml'" in message
    assert all(n in message for n in ENTRIES)
    for call in (zoo.pretrained_path, zoo.metatest_flags, zoo.load_pretrained):
        with pytest.raises(ValueError, match="unknown pretrained model 'nope'"):
            call("nope")
    with pytest.raises(ValueError) as e:
        zoo.metatest_flags("omniglot_imaml_5w1s", "10shot")
    assert "\n" not in str(e.value) and "1shot, 5shot" in str(e.value)


def _write(tmp_path, index):
    path = tmp_path / "pretrained" / "index.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(index if isinstance(index, str) else json.dumps(index))
    return str(path)


def _set(path_in_index, value):
    def edit(index):
        *parents, last = path_in_index
        obj = index
        for p in parents:
            obj = obj[p]
        if value is KeyError:
            del obj[last]
        else:
            obj[last] = value
    return edit


NAV = next(i for i, m in enumerate(INDEX["models"]) if m["benchmark"] == "navigation2d")  # an RL row
IMAML = next(i for i, m in enumerate(INDEX["models"]) if m["name"] == "omniglot_imaml_5w1s")


@pytest.mark.parametrize("edit, message", [
    (_set(["schema_version"], 1), "schema_version 1 is not the one this pymeta reads (2)"),
    (_set(["models"], {}), "field 'models' must be list"),
    (_set(["models", 0, "path"], "../elsewhere/model.h5"), "must be a .h5/.keras file under pretrained/"),
    (_set(["models", 0, "benchmark"], "cifar"), "benchmark 'cifar' is not one of"),
    (_set(["models", 0, "algorithm"], KeyError), "missing field(s) algorithm"),
    (_set(["models", 0, "colour"], "red"), "unknown field(s) colour"),
    (_set(["models", 1, "name"], "omniglot_fomaml_5w1s"), "name must be non-empty and unique"),
    (_set(["models", 0, "training", "meta_iterations"], "12000"), "field 'meta_iterations' must be int"),
    (_set(["models", 0, "results"], []), "results must not be empty"),
    (_set(["models", 0, "results", 0, "mean"], "97.67"), "field 'mean' must be int/float/list"),
    (_set(["models", 0, "results", 0, "ci95"], True), "field 'ci95' must be int/float/list, got bool"),
    (_set(["models", 0, "results", 0, "metric"], "top5"), "metric 'top5' is not one of"),
    (_set(["models", 0, "results", 1, "key"], "1shot"), "result key '1shot' repeated"),
    (_set(["models", 0, "results", 0, "protocol", "num_tasks"], 1000.0), "'num_tasks' must be int, got float"),
    (_set(["models", 0, "results", 0, "protocol", "transductive"], 1), "'transductive' must be bool, got int"),
    (_set(["models", 0, "results", 0, "protocol", "seed"], KeyError), "protocol: missing 'seed'"),
    (_set(["models", 0, "results", 0, "protocol", "output"], "x.json"), "'output' is not a meta-test protocol flag"),
    (_set(["models", 0, "results", 0, "protocol", "queries"], 15), "'queries' is not a meta-test protocol flag"),
    (_set(["models", 0, "results", 0, "published"], {"value": 98.3}), "missing field(s) ci95, source"),
    (_set(["models", NAV, "results", 0, "mean"], [-36.2, -9.8]), "mean and ci95 must have one value per step"),
    (_set(["models", 0, "results", 0, "measured_on"], KeyError), "missing field(s) measured_on"),
    (_set(["models", 0, "results", 0, "measured_on", "cpu"], "avx512bf16"), "cpu 'avx512bf16' is not one of"),
    (_set(["models", 0, "results", 0, "measured_on", "cpu"], KeyError), "measured_on: missing field(s) cpu"),
    (_set(["models", 0, "results", 0, "measured_on", "precision"], "bfloat16"), "precision 'bfloat16' is not one of"),
    # the iMAML model file records mixed_bfloat16, so its figures were computed in it
    (_set(["models", IMAML, "results", 0, "measured_on", "precision"], "float32"),
     "precision 'float32' is not the one the row's meta-test uses ('mixed_bfloat16'"),
])
def test_malformed_index_entries_are_one_line_errors(tmp_path, edit, message):
    index = copy.deepcopy(INDEX)
    edit(index)
    path = _write(tmp_path, index)
    with pytest.raises(ValueError) as e:
        zoo.list_models(path)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert str(e.value).startswith(path + ": ")


def test_index_that_is_not_json_or_missing(tmp_path):
    path = _write(tmp_path, '{"schema_version": 2,')
    with pytest.raises(ValueError, match="not valid JSON"):
        zoo.load_index(path)
    with pytest.raises(FileNotFoundError, match="no model-zoo index at"):
        zoo.load_index(str(tmp_path / "none.json"))


def test_paths_are_relative_to_the_index_root(tmp_path):
    path = _write(tmp_path, INDEX)
    assert zoo.pretrained_path("omniglot_imaml_5w1s", path) == str(
        tmp_path / "pretrained" / "omniglot" / "omniglot_imaml_5w1s.h5")


def test_zoo_imports_no_tensorflow():
    code = ("import sys; from pymeta import zoo; zoo.metatest_flags('omniglot_imaml_5w1s'); "
            "zoo.metatest_command('navigation2d_maml'); assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]


def test_docs_page_is_the_rendering_of_the_index(tmp_path, capsys):
    render = [sys.executable, os.path.join(REPO, "scripts", "render_zoo.py")]
    out = subprocess.run(render + ["--check"], capture_output=True, text=True, env=_env())
    assert out.returncode == 0, out.stderr
    page = open(os.path.join(REPO, "docs", "model_zoo.md")).read()
    # every row's command, as pasted (continuation lines joined), and its short --pretrained form
    pasted = re.sub(r" \\\n\s+", " ", page)
    for m in INDEX["models"]:
        assert f"`{m['path']}`" in page
        for r in m["results"]:
            assert f"\n{r['command']}\n" in pasted.replace("    python", "python")
            assert f"python scripts/meta_test.py --pretrained {m['name']}:{r['key']}\n" in page
    assert max(len(line) for line in page.split("```")[-2].split("\n")) <= 110  # commands wrapped
    # a changed index no longer matches the page; a broken one is a one-line error (in-process: main(argv))
    spec = importlib.util.spec_from_file_location("render_zoo", os.path.join(REPO, "scripts", "render_zoo.py"))
    render_zoo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render_zoo)
    index = copy.deepcopy(INDEX)
    index["models"][0]["results"][0]["mean"] = 97.68
    assert render_zoo.main(["--check", "--index", _write(tmp_path, index)]) == 1
    assert "is not the rendering" in capsys.readouterr().err
    index["schema_version"] = 0
    assert render_zoo.main(["--check", "--index", _write(tmp_path, index)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    output = tmp_path / "zoo.md"  # and it writes the page it checks
    assert render_zoo.main(["--output", str(output)]) == 0
    assert output.read_text() == page


@pytest.mark.parametrize("name", ["omniglot_imaml_5w1s", "navigation2d_maml"])
def test_load_pretrained_returns_the_file_weights(name):
    model = zoo.load_pretrained(name)
    with h5py.File(zoo.pretrained_path(name), "r") as f:
        g = f["model_weights"]
        stored = []
        g.visititems(lambda k, v: stored.append(np.asarray(v)) if isinstance(v, h5py.Dataset) else None)
    weights = model.get_weights()
    assert len(weights) == len(stored) and weights
    assert sorted(w.size for w in weights) == sorted(a.size for a in stored)
    assert sum(float(np.sum(np.asarray(w, np.float64))) for w in weights) == pytest.approx(
        sum(float(np.sum(np.asarray(a, np.float64))) for a in stored), rel=1e-6)


def _argv(flags, **extra):
    argv = []
    for k, v in {**flags, **extra}.items():
        if isinstance(v, bool):
            argv.append(f"--{k}" if v else f"--no{k}")
        elif v != "":
            argv.append(f"--{k}={v}")
    return argv


def _metatest(tmp_path, flags, **extra):
    out_json = tmp_path / "metatest.json"
    out = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "meta_test.py"),
                          *_argv(flags, output=str(out_json), **extra)],
                         capture_output=True, text=True, env=_env(), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    with open(out_json) as f:
        return json.load(f)


@pytest.mark.slow
def test_remeasure_navigation2d_row_task_by_task(tmp_path):
    """The MAML-TRPO 2D-navigation row, re-run from the index's flags, against the per-task returns its
    committed JSON records (same seed and tasks; float round-off only: one kind of CPU reproduces a
    run exactly, another kind may differ in the sampled episodes)."""
    name = "navigation2d_maml"
    r = ENTRIES[name]["results"][0]
    d = _metatest(tmp_path, zoo.metatest_flags(name))
    with open(os.path.join(REPO, r["json"])) as f:
        recorded = json.load(f)
    np.testing.assert_array_equal(d["task_params"], recorded["task_params"])  # the same 40 goals
    np.testing.assert_allclose(d["returns_by_task"], recorded["returns_by_task"], atol=1e-3, rtol=0)
    assert [round(x, 2) for x in d["returns_by_step"]] == r["mean"]


def test_no_run_writes_into_the_zoo(tmp_path):
    """Training, meta-test and choose_test_steps refuse an output inside pretrained/ (the docs said runs
    never write there; `--model_save_filename=pretrained/x.h5` did), before any work; elsewhere is fine."""
    from pymeta.config.checks import check_output_folders
    from pymeta.paths import ZOO_DIR, inside_zoo
    assert os.path.isfile(os.path.join(ZOO_DIR, "index.json"))
    for path in (os.path.join(ZOO_DIR, "x.h5"), os.path.join(ZOO_DIR, "omniglot", "new", "x.json"), ZOO_DIR + os.sep):
        assert inside_zoo(path)
        with pytest.raises(ValueError, match=r"is inside the model zoo .* write under runs/"):
            check_output_folders(path)
    os.symlink(os.path.join(ZOO_DIR, "omniglot"), tmp_path / "link")  # a link into the zoo is inside too
    with pytest.raises(ValueError, match="is inside the model zoo"):
        check_output_folders(str(tmp_path / "link" / "x.json"))
    assert not inside_zoo(os.path.dirname(ZOO_DIR) + os.sep + "pretrained_other/x.h5")
    check_output_folders(str(tmp_path / "runs" / "x.h5"))
    before = sorted(os.listdir(ZOO_DIR))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    for cmd in ([sys.executable, "-m", "pymeta.cli.train", "--dataset=sinusoid", "--num_outer_metatraining_iterations=1",
                 f"--model_save_filename={os.path.join(ZOO_DIR, 'x.h5')}"],
                [sys.executable, "-m", "pymeta.cli.metatest", "--pretrained", "navigation2d_maml",
                 "--output", os.path.join(ZOO_DIR, "x.json")]):
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
        assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(
            f"error: cannot write to {os.path.join(ZOO_DIR, 'x')}"), proc.stderr[-2000:]
    assert sorted(os.listdir(ZOO_DIR)) == before
