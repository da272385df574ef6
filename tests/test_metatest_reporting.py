"""What a meta-test reports besides its figure: progress on long meta-tests when the output is not a
terminal (#37 item 5), a non-finite evaluation as a one-line error with exit 2 and no JSON (#38 item 6),
and the per-task values and protocol in the result JSON (#35)."""

import dataclasses
import json
import logging
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from data_fixtures import REPO
from pymeta.progress import Progress, duration

SINUSOID = ["--dataset", "sinusoid", "--num_train_samples_per_class", "10", "--num_test_samples_per_class", "10",
            "--inner_lr", "0.01", "--num_inner_iterations", "3", "--batch", "10", "--seed", "2"]


def meta_test_script(*args):
    """scripts/meta_test.py through pipes (stdout and stderr are not terminals)."""
    return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "meta_test.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


def error_line(stderr):
    """The one `error: ...` line of a failed run (no traceback)."""
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-2000:]
    return errors[0]


def sinusoid_model(path, scale=None, value=None):
    """A seeded sinusoid network saved to `path`; its weights times `scale`, or all set to `value`."""
    from pymeta.model_io import save_model
    from pymeta.networks import make_sinusoid_model
    keras.utils.set_random_seed(0)
    model = make_sinusoid_model()
    if scale is not None or value is not None:
        model.set_weights([np.full_like(w, value) if value is not None else w * scale for w in model.get_weights()])
    return str(save_model(model, path))


# --- progress ----------------------------------------------------------------------------------------
@pytest.fixture
def progress_lines():
    """The messages logged to `pymeta.progress` during the test (a handler of its own: not through the
    root logger, which a command-line program's logging set-up cuts off)."""
    lines = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("pymeta.progress")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_progress_lines_at_the_first_update_every_tenth_every_30_s_and_at_the_end(progress_lines):
    clock = FakeClock()
    with Progress(100, "meta-test", terminal=False, clock=clock, mean_text="mean {:.1f}%".format) as p:
        clock.now += 20  # compiling
        p.update(5, 97.0)  # the first update: a line (no time left yet: the pace is not known)
        for _ in range(4):
            clock.now += 1
            p.update(5, 98.0)  # a line at 15 and at 25 (a tenth more than at the last line)
        clock.now += 31
        p.update(1, 98.5)  # 26: not a tenth more, but 31 s since the last line
        clock.now += 1
        p.update(74, 99.0)  # the end
    lines = progress_lines
    # the time left: the pace since the first update times the tasks left, 2 s / 10 tasks * 85 = 17 s,
    # 4 s / 20 * 75 = 15 s, 35 s / 21 * 74 = 123 s
    assert lines == ["meta-test: 5/100 tasks (5%), mean 97.0%, 20 s elapsed",
                     "meta-test: 15/100 tasks (15%), mean 98.0%, 22 s elapsed, about 17 s left",
                     "meta-test: 25/100 tasks (25%), mean 98.0%, 24 s elapsed, about 15 s left",
                     "meta-test: 26/100 tasks (26%), mean 98.5%, 55 s elapsed, about 2 min 3 s left",
                     "meta-test: 100/100 tasks (100%), mean 99.0%, 56 s elapsed"]


def test_progress_is_silent_when_disabled_and_a_bar_on_a_terminal(progress_lines, capsys):
    with Progress(10, "meta-test", enabled=False, terminal=False) as p:
        p.update(10, 1.0)
    with Progress(10, "meta-test", terminal=True) as p:  # tqdm on stderr, no log lines
        p.update(10, 1.0)
    assert progress_lines == []
    assert "10/10" in capsys.readouterr().err
    assert [duration(s) for s in (0.4, 59, 61, 3599, 3600 + 5 * 60)] == ["0 s", "59 s", "1 min 1 s", "59 min 59 s",
                                                                        "1 h 05 min"]


def test_a_piped_meta_test_shows_progress_lines_and_records_each_task(tmp_path):
    model = sinusoid_model(tmp_path / "sinusoid.h5")
    out = tmp_path / "result.json"
    proc = meta_test_script("--model", model, *SINUSOID, "--num_tasks", 40, "--output", out)
    assert proc.returncode == 0, proc.stderr
    progress = [line for line in proc.stdout.splitlines() if line.startswith("meta-test: ")]
    assert progress[0].startswith("meta-test: 10/40 tasks (25%), mean MSE "), proc.stdout
    assert progress[-1].startswith("meta-test: 40/40 tasks (100%), mean MSE "), proc.stdout
    assert len(progress) == 4  # every batch of 10 is more than a tenth
    with open(out) as f:
        result = json.load(f)
    values = result["values_by_task"]
    assert len(values) == len(result["loss_by_task"]) == result["num_tasks"] == 40
    assert values == result["loss_by_task"]  # sinusoid: the metric is the MSE loss
    assert result["mean"] == pytest.approx(np.mean(values), rel=1e-12)
    assert progress[-1].split("mean MSE ")[1].startswith(f"{np.mean(values):.2f},")
    assert (result["seed"], result["queries_per_class"], result["num_inner_iterations"]) == (2, 10, 3)
    assert result["settings"]["inner_lr"] == 0.01 and result["settings"]["batch"] == 10
    quiet = meta_test_script("--model", model, *SINUSOID, "--num_tasks", 40, "--noprogress")
    assert quiet.returncode == 0, quiet.stderr
    assert "meta-test: " not in quiet.stdout + quiet.stderr
    assert "sinusoid test: " in quiet.stdout  # the result line stays


# --- a non-finite evaluation is an error ---------------------------------------------------------------
def test_a_model_file_with_nan_weights_is_one_line_exit_2_and_no_json(tmp_path):
    model = sinusoid_model(tmp_path / "nan.h5", value=np.nan)
    out = tmp_path / "result.json"
    proc = meta_test_script("--model", model, *SINUSOID, "--num_tasks", 10, "--output", out)
    assert proc.returncode == 2
    assert "nan.h5 holds non-finite weights" in error_line(proc.stderr)
    assert not out.exists()


def test_a_diverging_adaptation_is_one_line_exit_2_and_no_json(tmp_path):
    """Finite weights, an inner learning rate that makes the adapted loss NaN: before, '... ± 0.00' and
    exit 0; now the task, the steps, the loss before adaptation and what to try."""
    model = sinusoid_model(tmp_path / "sinusoid.h5")
    out = tmp_path / "result.json"
    proc = meta_test_script("--model", model, *SINUSOID, "--inner_lr", "1e30", "--num_tasks", 20, "--output", out)
    assert proc.returncode == 2
    line = error_line(proc.stderr)
    assert line.startswith("error: meta-test task 1 of 20: the test loss is nan after 3 inner steps (")
    assert "before adaptation): the adaptation diverged (try a smaller --inner_lr than 1e+30" in line
    assert line.endswith("nothing written")
    assert not out.exists()


def test_outputs_that_overflow_before_adaptation_are_named_as_the_cause(tmp_path):
    """Weights of 1e30 are finite (the load check passes) but the network's output is not."""
    from pymeta.cli.metatest import parse_args
    from pymeta.evaluation import meta_test
    model = sinusoid_model(tmp_path / "big.h5", value=1e30)
    out = tmp_path / "result.json"
    c = parse_args(["--model", model, *SINUSOID, "--num_tasks", "10", "--output", str(out), "--noprogress"])
    with pytest.raises(ValueError, match=r"^meta-test task 1 of 10: the test loss is (nan|inf) after 3 inner steps "
                                         r"and (nan|inf) before adaptation: the model's outputs are not finite"):
        meta_test(c)
    assert not out.exists()


def test_a_diverging_rl_adaptation_names_the_tasks_and_the_step(tmp_path, progress_lines):
    """2D navigation from the committed MAML policy with absurd step sizes: the first collection after the
    first step has non-finite actions; the error names the tasks and the step, nothing is written."""
    from pymeta.cli.metatest import parse_args
    from pymeta.metatest import meta_test
    model = os.path.join(REPO, "pretrained", "rl", "navigation2d", "navigation2d_maml.h5")
    out = tmp_path / "result.json"
    c = parse_args(["--model", model, "--num_tasks", "4", "--batch", "2", "--num_inner_iterations", "2",
                    "--episodes_per_task", "2", "--step_sizes", "1e30,1e30", "--output", str(out), "--noprogress"])
    with pytest.raises(ValueError) as e:
        meta_test(c)
    message = str(e.value)
    assert message.startswith("meta-test tasks 1-2 of 4: ") and "non-finite" in message
    assert ", after adaptation step 1 (finite before it): the policy-gradient steps diverged (try smaller " \
           "--step_sizes than 1e+30,1e+30); nothing written" in message
    assert "\n" not in message and not out.exists()
    assert progress_lines == []  # --noprogress
    ok = meta_test(dataclasses.replace(c, step_sizes="0.5,0.25", output="", progress=True))  # sane steps
    assert np.all(np.isfinite(ok["returns_by_task"])) and ok["seed"] == 0
    assert [line.split(", ")[:2] for line in progress_lines] == [  # not a terminal: lines
        ["meta-test: 2/4 tasks (50%)", f"mean return after 2 steps {np.mean(ok['returns_by_task'][:2], 0)[-1]:.2f}"],
        ["meta-test: 4/4 tasks (100%)", f"mean return after 2 steps {ok['returns_by_step'][-1]:.2f}"]]
