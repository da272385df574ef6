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
