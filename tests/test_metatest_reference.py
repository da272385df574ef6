"""The committed models in pretrained/ meta-test to the same numbers as before the consolidation of
issue #35: one supervised model (Omniglot FOMAML 5-way 1-shot) and one RL model (2D navigation MAML),
each on a few tasks, re-measured with the current `scripts/meta_test.py` against the per-task values the
code of commit fc4f70a measured (tests/data/metatest_reference/reference.json, written by
make_reference.py beside it, whose docstring has the commands).

Tolerances: the Omniglot accuracies and losses must be equal to the last bit. The RL returns before
adaptation too; after adaptation within a relative 1e-6: the policy-gradient step now runs through
another compiled path (`Learner.adapt_tasks`, updates applied as p + (-lr g)), which rounds the adapted
float32 parameters differently (measured: at most 1.2e-7 relative, float32's epsilon; a changed step
size, baseline or sampling moves these returns by percents). Float rounding also depends on the CPU's
vector instructions and the TensorFlow version: on another kind of machine than the reference's the
test still runs, with bounds that float rounding cannot exceed but a changed algorithm would: each
Omniglot task within one query image (100/75 points: rounding can flip a near-tie), the losses within a
relative 1e-3, the RL returns within a relative 1e-3 (regenerate an exact reference there with
make_reference.py)."""

import hashlib
import importlib.util
import json
import os

import numpy as np
import pytest

from data_fixtures import REPO, run_script

HERE = os.path.join(REPO, "tests", "data", "metatest_reference")
with open(os.path.join(HERE, "reference.json")) as f:
    REFERENCE = json.load(f)
MODELS = {"omniglot": os.path.join(REPO, "pretrained", "omniglot", "omniglot_fomaml_5w1s.h5"),
          "navigation2d": os.path.join(REPO, "pretrained", "rl", "navigation2d", "navigation2d_maml.h5")}
OMNIGLOT_DIR = os.environ.get("PYMETA_OMNIGLOT_DIR") or os.path.join(
    os.path.dirname(REPO), "shared", "datasets", "omniglot")


def _make_reference_module():
    spec = importlib.util.spec_from_file_location("make_reference", os.path.join(HERE, "make_reference.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def same_machine_kind():
    """True on the reference's kind of machine (exact comparisons), False elsewhere (rounding bounds)."""
    return _make_reference_module().machine() == REFERENCE["machine"]


def meta_test(tmp_path, benchmark, *extra):
    """The current meta-test of `benchmark`'s committed model with the reference's flags: its JSON."""
    ref = REFERENCE[benchmark]
    with open(MODELS[benchmark], "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == ref["model_sha256"], \
            f"{MODELS[benchmark]} is not the file the reference measured ({ref['model']} at {REFERENCE['commit']})"
    out = tmp_path / f"{benchmark}.json"
    proc = run_script("meta_test.py", "--model", MODELS[benchmark], *ref["flags"], *extra, "--output", out)
    assert proc.returncode == 0, proc.stderr
    with open(out) as f:
        return json.load(f)


def test_rl_model_meta_tests_to_its_recorded_per_task_returns(tmp_path, same_machine_kind):
    ref = REFERENCE["navigation2d"]
    result = meta_test(tmp_path, "navigation2d")
    assert result["task_params"] == ref["task_params"]  # the same test tasks (goals), exactly
    returns, expected = np.array(result["returns_by_task"]), np.array(ref["returns_by_task"])  # [tasks, steps]
    assert returns.shape == expected.shape == (4, 4)
    rtol = 1e-6 if same_machine_kind else 1e-3
    if same_machine_kind:
        np.testing.assert_array_equal(returns[:, 0], expected[:, 0])  # before adaptation: bit-exact
    np.testing.assert_allclose(returns, expected, rtol=rtol, atol=0)
    np.testing.assert_allclose(result["returns_by_step"], ref["returns_by_step"], rtol=rtol, atol=0)


@pytest.mark.slow
def test_omniglot_model_meta_tests_to_its_recorded_per_task_accuracies(tmp_path, same_machine_kind):
    if not all(os.path.isdir(os.path.join(OMNIGLOT_DIR, p)) for p in ("images_background", "images_evaluation")):
        pytest.skip(f"real Omniglot not found at {OMNIGLOT_DIR} (set PYMETA_OMNIGLOT_DIR)")
    data = tmp_path / "omniglot.pkl"
    proc = run_script("make_omniglot_dataset.py", "-i", OMNIGLOT_DIR, "-o", data, "--size", 28, "-q")
    assert proc.returncode == 0, proc.stderr
    ref = REFERENCE["omniglot"]
    result = meta_test(tmp_path, "omniglot", "--data_path", data)
    assert len(ref["values_by_task"]) == result["num_tasks"] == 10
    if same_machine_kind:
        assert result["values_by_task"] == ref["values_by_task"]  # accuracy (%) of each task, to the last bit
        assert result["loss_by_task"] == ref["loss_by_task"]
        assert result["mean"] == ref["mean"]
    else:  # another CPU kind or TensorFlow version: at most one query image per task, losses to 1e-3
        np.testing.assert_allclose(result["values_by_task"], ref["values_by_task"], rtol=0, atol=100 / 75 + 1e-4)
        np.testing.assert_allclose(result["loss_by_task"], ref["loss_by_task"], rtol=1e-3, atol=0)
