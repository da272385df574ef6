"""An interrupted meta-test with --output continues where it stopped: the same command, run again,
evaluates only the remaining tasks and reports exactly what one uninterrupted meta-test reports."""

import json
import logging
import os

import numpy as np
import pytest

from pymeta.core.meta_learner import GradBasedMetaLearner as MetaLearner
from pymeta.partial_results import SUFFIX, PartialResults
from test_metatest_reporting import SINUSOID, sinusoid_model

# 10 support points per task drawn 5 at a time: the inner minibatches use the random stream too
ARGS = [*SINUSOID, "--inner_batch_size", "5", "--num_tasks", "40", "--noprogress"]


def meta_test(*argv):
    from pymeta.cli.metatest import parse_args
    from pymeta.evaluation import meta_test as run
    return run(parse_args([*map(str, argv)]))


def evaluated_batches(monkeypatch, stop_after=None):
    """A list that grows by one at each batch of tasks evaluated from now on; a KeyboardInterrupt
    stops the meta-test while it evaluates batch `stop_after` + 1."""
    calls = []
    evaluate = MetaLearner.evaluate_tasks

    def counting(self, *args, **kwargs):
        calls.append(1)
        if stop_after is not None and len(calls) > stop_after:
            raise KeyboardInterrupt
        return evaluate(self, *args, **kwargs)

    monkeypatch.setattr(MetaLearner, "evaluate_tasks", counting)
    return calls


def interrupted(monkeypatch, *argv):
    """Run the meta-test, stopped by a KeyboardInterrupt while it evaluates its third batch."""
    with monkeypatch.context() as m:
        evaluated_batches(m, stop_after=2)
        with pytest.raises(KeyboardInterrupt):
            meta_test(*argv)


def test_the_same_command_continues_an_interrupted_meta_test_to_the_uninterrupted_result(
        tmp_path, monkeypatch, caplog):
    model = sinusoid_model(tmp_path / "sinusoid.h5")
    whole = meta_test("--model", model, *ARGS, "--output", tmp_path / "whole.json")
    out = tmp_path / "result.json"
    interrupted(monkeypatch, "--model", model, *ARGS, "--output", out)
    assert not out.exists()
    with open(str(out) + SUFFIX) as f:
        saved = json.load(f)
    assert saved["losses"] == whole["values_by_task"][:20]  # the first two batches of 10

    batches = evaluated_batches(monkeypatch)
    with caplog.at_level(logging.INFO, logger="pymeta.evaluation"):
        again = meta_test("--model", model, *ARGS, "--output", out)
    assert len(batches) == 2  # only the remaining 20 tasks
    assert f"continuing the meta-test of {out}{SUFFIX}: 20 of 40 tasks were evaluated before" in caplog.text
    # same tasks, same inner minibatches, same figures as the uninterrupted meta-test
    np.testing.assert_allclose(again["values_by_task"], whole["values_by_task"], rtol=1e-6, atol=0)
    assert again["mean"] == pytest.approx(whole["mean"], rel=1e-6)
    assert again["seconds"] >= saved["seconds"]
    with open(out) as f:
        assert json.load(f)["values_by_task"] == again["values_by_task"]
    assert not os.path.exists(str(out) + SUFFIX)  # removed once the result is written


@pytest.mark.parametrize("change", ["setting", "model file"])
def test_a_partial_result_of_another_meta_test_is_ignored(tmp_path, monkeypatch, caplog, change):
    model = sinusoid_model(tmp_path / "sinusoid.h5")
    out = tmp_path / "result.json"
    interrupted(monkeypatch, "--model", model, *ARGS, "--output", out)
    argv = ["--model", model, *ARGS]
    if change == "setting":
        argv += ["--inner_lr", "0.02"]
    else:  # other weights in the same file name
        sinusoid_model(model, scale=0.5)
    fresh = meta_test(*argv, "--output", tmp_path / "fresh.json")
    batches = evaluated_batches(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="pymeta.partial_results"):
        result = meta_test(*argv, "--output", out)
    assert len(batches) == 4  # from the first task
    assert f"ignoring {out}{SUFFIX}: it is not a partial result of this meta-test" in caplog.text
    np.testing.assert_allclose(result["values_by_task"], fresh["values_by_task"], rtol=1e-6, atol=0)
    assert not os.path.exists(str(out) + SUFFIX)


def test_without_output_nothing_is_kept(tmp_path, monkeypatch):
    model = sinusoid_model(tmp_path / "sinusoid.h5")
    interrupted(monkeypatch, "--model", model, *ARGS)
    assert os.listdir(tmp_path) == ["sinusoid.h5"]


def test_partial_files_that_do_not_fit_are_ignored(tmp_path, caplog):
    path = str(tmp_path / "r.json")
    partial = PartialResults(path, {"settings": {"seed": 0}, "model_sha256": "ab"}, batch=10, total=40)
    assert partial.load() == ([], [], 0.0)  # no file
    partial.save([0.5] * 20, [1.0] * 20, 3.0)
    assert partial.load() == ([0.5] * 20, [1.0] * 20, 3.0)
    assert PartialResults(path, {"settings": {"seed": 1}, "model_sha256": "ab"}, 10, 40).load() == ([], [], 0.0)
    assert PartialResults(path, {"settings": {"seed": 0}, "model_sha256": "ab"}, 10, 20).load() == ([], [], 0.0)
    assert PartialResults(path, {"settings": {"seed": 0}, "model_sha256": "ab"}, 15, 40).load() == ([], [], 0.0)
    for text in ("{", "[]", '{"losses": [1]}', json.dumps({"identity": partial.identity, "losses": ["x"],
                                                            "accuracies": [1], "seconds": 1})):
        with open(path + SUFFIX, "w") as f:
            f.write(text)
        assert partial.load() == ([], [], 0.0), text
    partial.remove()
    partial.remove()  # already gone: no error
    assert not os.path.exists(path + SUFFIX)
    assert caplog.text.count("ignoring") == 7
