"""Plot the validation curves of one or more runs (the <model>_history.json files that
example_metatrain.py writes, of any pymeta version) into one PNG: the accuracy (or loss) after
adaptation, or for RL runs the return after the inner steps.

    python scripts/plot_history.py saved/a_history.json:FOMAML saved/b_history.json:Reptile -o curves.png
    python scripts/plot_history.py ... --x minutes -o curves.png     # against wall-clock training time
"""

import argparse
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pymeta.atomic import atomic_write  # noqa: E402
from pymeta.run.history import read_history  # noqa: E402


def draw(runs, x="iteration", title=""):
    """A figure of the validation curves of `runs`, a list of (history list, label): accuracy (or loss,
    for regression; RL: the return after the last inner step) against the meta-iteration or
    (x="minutes") the wall-clock minutes of training."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for history, label in runs:
        rl = [h for h in history if "validation_returns_by_step" in h]
        history = rl or [h for h in history if "val_loss" in h]
        xs = [h["iteration"] if x == "iteration" else h["seconds"] / 60 for h in history]
        if rl:
            ax.plot(xs, [h["validation_returns_by_step"][-1] for h in rl], "o-", ms=3, label=label)
            ax.set_ylabel("validation return after adaptation")
        elif any(h["val_accuracy"] for h in history):
            ax.plot(xs, [100 * h["val_accuracy"] for h in history], "o-", ms=3, label=label)
            ax.set_ylabel("validation accuracy after adaptation (%)")
        else:
            ax.plot(xs, [h["val_loss"] for h in history], "o-", ms=3, label=label)
            ax.set_ylabel("validation loss after adaptation")
    ax.set_xlabel("meta-iteration" if x == "iteration" else "training time (minutes)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    """Draw the figure; 0, or 2 after a one-line error (an unreadable history, an unknown image format)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("histories", nargs="+", help="history.json[:label]")
    p.add_argument("-o", "--output", required=True, help="PNG file to write")
    p.add_argument("--title", default="")
    p.add_argument("--x", choices=("iteration", "minutes"), default="iteration",
                   help="horizontal axis: meta-iterations or wall-clock minutes of training (the history's "
                        "'seconds', which a resumed run continues)")
    a = p.parse_args(argv)
    runs = []
    try:
        for spec in a.histories:
            path, _, label = spec.partition(":")
            try:  # {"settings", "history"} or an older bare list
                runs.append((read_history(path)["history"], label or path))
            except (OSError, ValueError) as e:
                raise ValueError(f"{path}: {e}") from None
        try:
            fig = draw(runs, a.x, a.title)
        except (KeyError, TypeError) as e:  # an entry without a key the axis needs, or not an object
            what = f"without {e}" if isinstance(e, KeyError) else f"that is not a JSON object ({e})"
            raise ValueError(f"a history entry {what} (--x {a.x}): not the <model>_history.json of a "
                             "pymeta run?") from None
        with atomic_write(a.output) as tmp:  # the old figure stays if the new one cannot be written
            fig.savefig(tmp, dpi=100)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
