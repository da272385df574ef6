"""scripts/plot_history.py: validation curves of several runs against meta-iterations or wall-clock minutes."""

import importlib.util
import json
import os

import pytest

pytest.importorskip("matplotlib")
SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "plot_history.py")


def load_script():
    spec = importlib.util.spec_from_file_location("plot_history", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def history(seconds, accuracies):
    return [{"iteration": 500 * i, "val_loss": 1.0 - a, "val_accuracy": a, "train_loss": None, "seconds": s}
            for i, (s, a) in enumerate(zip(seconds, accuracies))]


def test_curves_against_minutes_and_iterations(tmp_path):
    ph = load_script()
    a, b = history([0, 600, 1500], [0.5, 0.8, 0.9]), history([0, 300], [0.4, 0.7])
    fig = ph.draw([(a, "A"), (b, "B")], x="minutes")
    ax = fig.axes[0]
    assert [list(line.get_xdata()) for line in ax.lines] == [[0, 10, 25], [0, 5]]
    assert list(ax.lines[0].get_ydata()) == pytest.approx([50, 80, 90])
    assert ax.get_xlabel() == "training time (minutes)"
    assert list(ph.draw([(a, "A")]).axes[0].lines[0].get_xdata()) == [0, 500, 1000]
    for name, h in (("a", a), ("b", {"note": "wrapped", "history": b})):
        (tmp_path / f"{name}.json").write_text(json.dumps(h))
    out = tmp_path / "curves.png"
    ph.main([f"{tmp_path}/a.json:A", f"{tmp_path}/b.json", "--x", "minutes", "-o", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rl_histories_and_committed_files(tmp_path):
    """An RL history (training entries and validations) draws its validation return; every committed
    history in pretrained/ (old bare lists and {"settings", "history"}) reads."""
    import glob
    ph = load_script()
    rl = [{"iteration": 0, "validation_returns_by_step": [-40.0, -20.0], "seconds": 0.0},
          {"iteration": 1, "return_before": -41.0, "return_after": -21.0, "seconds": 30.0},
          {"iteration": 1, "validation_returns_by_step": [-39.0, -15.0], "seconds": 60.0}]
    line = ph.draw([(rl, "RL")]).axes[0].lines[0]
    assert list(line.get_xdata()) == [0, 1] and list(line.get_ydata()) == [-20.0, -15.0]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = sorted(glob.glob(os.path.join(repo, "pretrained", "**", "*_history.json"), recursive=True))
    bare = [p for p in paths if isinstance(json.load(open(p)), list)]  # older pymeta's supervised format
    rl = [p for p in paths if os.sep + "rl" + os.sep in p]
    assert len(paths) >= 20 and bare and rl, paths
    for group, name in ((bare, "bare"), ([p for p in paths if p not in bare and p not in rl], "supervised"), (rl, "rl")):
        out = tmp_path / f"{name}.png"
        assert ph.main([*group, "--x", "minutes" if name == "supervised" else "iteration", "-o", str(out)]) == 0
        assert out.read_bytes()[:4] == b"\x89PNG"


def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys):
    ph = load_script()
    good = tmp_path / "good.json"
    good.write_text(json.dumps(history([0, 60], [0.5, 0.6])))
    (tmp_path / "text.json").write_text("not json")
    (tmp_path / "dict.json").write_text('{"runs": 3}')
    (tmp_path / "no_seconds.json").write_text(json.dumps([{"iteration": 0, "val_loss": 1.0, "val_accuracy": 0.2}]))
    (tmp_path / "numbers.json").write_text(json.dumps([1, 2]))
    out = tmp_path / "curves.png"
    out.write_bytes(b"old figure")
    cases = [([str(tmp_path / "missing.json")], f"{tmp_path}/missing.json: [Errno 2] No such file"),
             ([str(tmp_path / "text.json")], f"{tmp_path}/text.json: Expecting value"),
             ([str(tmp_path / "dict.json")], f"{tmp_path}/dict.json: not a pymeta history"),
             ([str(tmp_path / "no_seconds.json"), "--x", "minutes"], "a history entry without 'seconds' (--x minutes)"),
             ([str(tmp_path / "numbers.json")], "a history entry that is not a JSON object"),
             ([str(good), "-o", str(tmp_path / "curves.txt")], "Format 'txt' is not supported")]
    for args, message in cases:
        if "-o" not in args:
            args = [*args, "-o", str(out)]
        assert ph.main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert out.read_bytes() == b"old figure" and not (tmp_path / "curves.txt").exists()

