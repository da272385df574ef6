"""`bench_metatrain.py` on two versions of pymeta in one sitting, alternating, to see whether a change
made the library slower.

    python benchmarks/compare_versions.py --base eaf37c7 [--rounds 3] -- --sinusoid-iterations 1000 \
        --omniglot-iterations 3 --layout default --skip-miniimagenet --precision float32

This checkout's `bench_metatrain.py` (the same harness for both) runs `--rounds` times on each version,
base and this checkout alternating (base, this, base, this, ...), each run in a fresh process with
`PYTHONPATH` at that version (the base is checked out in a temporary git worktree). The speed of the
machine drifts between minutes, so a row's figure is the median over the rounds of each run's median,
and its range spans every timing window of every round. Prints one markdown table: a row per benchmark
row and version, and this checkout's rate as a fraction of the base's.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def run_bench(version_dir, bench_args, out):
    env = {**os.environ, "PYTHONPATH": version_dir}
    subprocess.run([sys.executable, os.path.join(HERE, "bench_metatrain.py"), *bench_args, "--json-out", out],
                   check=True, env=env, cwd=version_dir, stdout=subprocess.DEVNULL)
    with open(out) as f:
        return json.load(f)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the git revision to compare this checkout with")
    parser.add_argument("--rounds", type=int, default=3, help="runs per version, alternating")
    parser.add_argument("bench_args", nargs=argparse.REMAINDER,
                        help="after --: arguments of bench_metatrain.py (give --layout default or task-parallel)")
    args = parser.parse_args()
    bench_args = [a for a in args.bench_args if a != "--"]
    if "--layout" not in " ".join(bench_args) or "--layout all" in " ".join(bench_args):
        parser.error("give bench_metatrain.py one thread layout after --, e.g. -- --layout default")
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"], check=True,
                           capture_output=True, text=True).stdout.strip()
    this = f"{head}{' + changes' if dirty else ''}"
    rates = {}  # (problem, algo, path, precision, version) -> [per-round medians], [all windows]
    with tempfile.TemporaryDirectory() as tmp:
        base_dir = os.path.join(tmp, "base")
        subprocess.run(["git", "-C", REPO, "worktree", "add", "--detach", base_dir, args.base], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for r in range(args.rounds):
                for version, directory in ((args.base, base_dir), (this, REPO)):
                    print(f"round {r + 1}/{args.rounds}: {version}", file=sys.stderr, flush=True)
                    for row in run_bench(directory, bench_args, os.path.join(tmp, "rows.json")):
                        key = (row["problem"], row["algo"], row["path"], row["precision"], version)
                        medians, windows = rates.setdefault(key, ([], []))
                        medians.append(float(np.median(row["rates"])))
                        windows.extend(row["rates"])
        finally:
            subprocess.run(["git", "-C", REPO, "worktree", "remove", "--force", base_dir], check=False)
    print(f"\n`bench_metatrain.py {' '.join(bench_args)}`, {args.rounds} alternating rounds per version\n")
    print("| problem | algorithm | path | precision | version | meta-iterations/s (median of rounds) "
          "| per-round medians | all windows | this / base |")
    print("|---|---|---|---|---|---:|---|---:|---:|")
    rows = list(dict.fromkeys(key[:4] for key in rates))
    for row in rows:
        base = rates.get(row + (args.base,))
        for version in (args.base, this):
            if row + (version,) not in rates:
                continue
            medians, windows = rates[row + (version,)]
            ratio = f"{np.median(medians) / np.median(base[0]):.2f}" if version == this and base else ""
            print(f"| {' | '.join(row)} | {version} | {np.median(medians):.2f} | "
                  f"{', '.join(f'{m:.3g}' for m in medians)} | {min(windows):.2f}-{max(windows):.2f} | {ratio} |")

if __name__ == "__main__":
    main()
