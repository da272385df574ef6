"""The run loop (`pymeta.run.loop`) alone, driven by a fake experiment: the validate / save /
checkpoint cadence, resume (exact), a stop signal (checkpoint, then `Interrupted`), rank 0 alone
writing, "model saved" only when something was written, divergence, and one history format (the
readers also accept the bare lists of older files, e.g. committed ones in pretrained/)."""

import glob
import json
import logging
import os
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf

from pymeta import checkpoint as ckpt
from pymeta.config import RunConfig, run_identity
from pymeta.run.divergence import Diverged
from pymeta.run.experiment import Step, Validation
from pymeta.run.history import history_entries, read_history
from pymeta.run.loop import run
from pymeta.run.signals import Interrupted

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeModel:
    non_trainable_variables = []


class FakeMetaLearner:
    """What a checkpoint holds: theta (one vector), a model, an outer optimizer (and no kept inner state)."""

    inner_state = None

    def __init__(self):
        self.meta_variables = [tf.Variable(np.zeros(3, np.float32))]
        self.model = FakeModel()
        self.optimizer = keras.optimizers.SGD(0.1)
        self.optimizer.build(self.meta_variables)

    def task_begin(self, task):
        pass


class FakeExperiment:
    """One meta-iteration: theta += a draw from numpy's global generator (so a resumed run continues
    exactly only if the generators were restored); `per_call` iterations per step at most."""

    def __init__(self, is_root=True, per_call=2, signal_at=None, nan_at=None, peers_stop=None):
        self.is_root, self.per_call = is_root, per_call
        self.signal_at, self.nan_at, self.peers_stop = signal_at, nan_at, peers_stop
        self.settings = {"dataset": "fake"}
        self.calls = []

    def setup(self, stop):
        self.calls.append(("setup",))
        np.random.seed(7)
        self.metalearner = FakeMetaLearner()

    def synchronize(self):
        self.calls.append(("synchronize",))

    def step(self, iteration, max_steps):
        count = min(self.per_call, max_steps)
        theta = self.metalearner.meta_variables[0]
        for i in range(count):
            theta.assign_add(np.random.rand(3).astype(np.float32))
        self.calls.append(("step", iteration, count))
        if self.signal_at is not None and iteration <= self.signal_at < iteration + count:
            os.kill(os.getpid(), signal.SIGTERM)
        loss = float("nan") if self.nan_at is not None and iteration + count > self.nan_at else 1.0
        return Step(count, losses=[loss] * count, entries=[{"iteration": iteration + count, "theta": float(theta[0])}],
                    scalars={"train/x": 1.0}, log=f"stepped to {iteration + count}")

    def validate(self, iteration, seconds):
        self.calls.append(("validate", iteration))
        if not self.is_root:
            return None
        value = float(self.metalearner.meta_variables[0][0])
        return Validation({"iteration": iteration, "val": value, "seconds": seconds}, value, "the validation value",
                          f"validated at {iteration}")

    def save(self):
        self.calls.append(("save",))
        with open(self.path, "w") as f:
            f.write("model")

    def agree_stop(self, signum):
        self.calls.append(("agree_stop", signum))
        return signum if self.peers_stop is None else self.peers_stop(signum)

    def finish(self, history):
        self.calls.append(("finish", len(history)))


def config(tmp_path, n=10, **kw):
    kw = {"test_every_k_iterations": 3, "save_every_k_iterations": 4, "progress": False, "tensorboard": False,
          **kw}
    return RunConfig(model_save_filename=str(tmp_path / "m.h5"), num_outer_metatraining_iterations=n, **kw)


def go(c, experiment):
    experiment.path = c.model_save_filename
    return run(c.sections().run, run_identity(c.sections()), experiment)


def of(experiment, kind):
    return [call[1:] for call in experiment.calls if call[0] == kind]


def test_cadence_history_format_and_files(tmp_path):
    c, e = config(tmp_path), FakeExperiment()
    history = go(c, e)
    # steps never cross a validation (every 3) or save (every 4) point; validation also at 0 and the end
    assert of(e, "step") == [(0, 2), (2, 1), (3, 1), (4, 2), (6, 2), (8, 1), (9, 1)]
    assert of(e, "validate") == [(0,), (3,), (6,), (9,), (10,)]
    assert len(of(e, "save")) == 3  # at 4, 8, 10
    assert [os.path.basename(p) for p in ckpt.checkpoint_files(c.resolved_run_dir())] == \
        ["ckpt-00000004.h5", "ckpt-00000008.h5", "ckpt-00000010.h5"]
    assert e.calls[:2] == [("setup",), ("synchronize",)] and e.calls[-1] == ("finish", len(history))
    written = json.load(open(tmp_path / "m_history.json"))
    assert written == {"settings": {"dataset": "fake"}, "history": history}
    assert [h["iteration"] for h in history if "val" in h] == [0, 3, 6, 9, 10]
    assert [h["iteration"] for h in history if "theta" in h] == [2, 3, 4, 6, 8, 9, 10]
    assert all("seconds" in h for h in history)  # the loop times the steps' entries
    assert not os.path.exists(os.path.join(c.resolved_run_dir(), "tensorboard"))


def test_a_resumed_run_continues_exactly(tmp_path):
    whole = FakeExperiment()
    reference = go(config(tmp_path / "a"), whole)
    first = go(config(tmp_path / "b", n=6), FakeExperiment())  # stops at 6 (a checkpoint there)
    assert first[-1]["iteration"] == 6
    second = FakeExperiment()
    resumed = go(config(tmp_path / "b"), second)
    assert of(second, "step")[0] == (6, 2) and (0,) not in of(second, "validate")
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    # the history is the one of the uninterrupted run (no entry twice), theta too (generators restored);
    # only the end of the shorter run (a validation at 6 is also a cadence point) is extra
    extra = [e for e in strip(resumed) if e not in strip(reference)]
    assert extra == [] and [e for e in strip(reference) if e not in strip(resumed)] == []
    np.testing.assert_array_equal(whole.metalearner.meta_variables[0].numpy(),
                                  second.metalearner.meta_variables[0].numpy())


def test_a_finished_run_run_again_writes_nothing_and_says_so(tmp_path, caplog):
    c = config(tmp_path)
    go(c, FakeExperiment())
    again = FakeExperiment()
    with caplog.at_level(logging.INFO, logger="pymeta.training"):
        go(c, again)
    assert of(again, "save") == [] and of(again, "step") == []
    assert "the run had already finished at iteration 10" in caplog.text and "model saved" not in caplog.text
    os.remove(c.model_save_filename)  # deleted: written again, and then it says so
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pymeta.training"):
        go(c, FakeExperiment())
    assert os.path.exists(c.model_save_filename) and "model saved to" in caplog.text


def test_a_stop_signal_ends_in_a_checkpoint_and_the_run_resumes_from_it(tmp_path):
    c = config(tmp_path, save_every_k_iterations=100, test_every_k_iterations=100)
    stopped = FakeExperiment(signal_at=4)
    with pytest.raises(Interrupted, match="stopped by SIGTERM; checkpoint written to .*ckpt-00000006.h5") as info:
        go(c, stopped)
    assert info.value.signum == signal.SIGTERM
    assert of(stopped, "step")[-1] == (4, 2)  # the step under way finished, then the stop
    assert os.path.exists(c.model_save_filename)  # the model too
    resumed = FakeExperiment()
    go(c, resumed)
    whole = FakeExperiment()
    go(config(tmp_path / "whole", save_every_k_iterations=100, test_every_k_iterations=100), whole)
    np.testing.assert_array_equal(whole.metalearner.meta_variables[0].numpy(),
                                  resumed.metalearner.meta_variables[0].numpy())


def test_every_rank_stops_when_one_is_signalled(tmp_path):
    """MPI: `agree_stop` combines the ranks' signals; a signal on another rank stops this one too."""
    c = config(tmp_path, save_every_k_iterations=100, test_every_k_iterations=100)
    e = FakeExperiment(peers_stop=lambda signum: signal.SIGINT if len(of(e, "agree_stop")) == 2 else signum)
    with pytest.raises(Interrupted, match="SIGINT"):
        go(c, e)
    assert len(of(e, "step")) == 2


def test_only_rank_0_writes(tmp_path):
    c = config(tmp_path)
    e = FakeExperiment(is_root=False)
    history = go(c, e)
    assert of(e, "validate") == [(0,), (3,), (6,), (9,), (10,)]  # every rank takes part in validation
    assert of(e, "save") == [] and not any(call[0] == "finish" for call in e.calls)
    assert not os.path.exists(c.model_save_filename) and not os.path.exists(tmp_path / "m_history.json")
    assert ckpt.checkpoint_files(c.resolved_run_dir()) == []
    assert not os.path.exists(os.path.join(c.resolved_run_dir(), "run.lock"))  # rank 0 holds the lock
    assert [h["iteration"] for h in history] == [2, 3, 4, 6, 8, 9, 10]  # its steps' entries, no validation


def test_divergence_stops_before_saving(tmp_path):
    c = config(tmp_path)
    e = FakeExperiment(nan_at=5)
    with pytest.raises(Diverged, match="training diverged at iteration 6: the training loss is not finite"):
        go(c, e)
    assert [os.path.basename(p) for p in ckpt.checkpoint_files(c.resolved_run_dir())] == ["ckpt-00000004.h5"]


def test_history_readers_take_both_formats(tmp_path):
    entries = [{"iteration": 0, "val_loss": 1.0, "val_accuracy": 0.5, "seconds": 0.0}]
    (tmp_path / "old.json").write_text(json.dumps(entries))
    (tmp_path / "new.json").write_text(json.dumps({"settings": {"dataset": "omniglot"}, "history": entries}))
    assert read_history(str(tmp_path / "old.json")) == {"settings": {}, "history": entries}
    assert read_history(str(tmp_path / "new.json"))["settings"] == {"dataset": "omniglot"}
    with pytest.raises(ValueError, match="not a pymeta history"):
        history_entries({"something": 1})
    committed = glob.glob(os.path.join(REPO, "pretrained", "**", "*_history.json"), recursive=True)
    formats = set()
    for path in committed:
        with open(path) as f:
            formats.add(type(json.load(f)).__name__)
        assert all("iteration" in h for h in read_history(path)["history"]), path
    assert formats == {"list", "dict"}  # committed histories of both formats were read
