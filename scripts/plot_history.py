"""Plot the validation curves of one or more runs (the <model>_history.json files that
example_metatrain.py writes) into one PNG.

    python scripts/plot_history.py saved/a_history.json:FOMAML saved/b_history.json:Reptile -o curves.png
"""

import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("histories", nargs="+", help="history.json[:label]")
    p.add_argument("-o", "--output", required=True, help="PNG file to write")
    p.add_argument("--title", default="")
    a = p.parse_args(argv)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for spec in a.histories:
        path, _, label = spec.partition(":")
        history = json.load(open(path))
        its = [h["iteration"] for h in history]
        if any(h["val_accuracy"] for h in history):
            ax.plot(its, [100 * h["val_accuracy"] for h in history], "o-", ms=3, label=label or path)
            ax.set_ylabel("validation accuracy after adaptation (%)")
        else:
            ax.plot(its, [h["val_loss"] for h in history], "o-", ms=3, label=label or path)
            ax.set_ylabel("validation loss after adaptation")
    ax.set_xlabel("meta-iteration")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if a.title:
        ax.set_title(a.title, fontsize=9)
    fig.tight_layout()
    fig.savefig(a.output, dpi=100)
    print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
