"""A benchmark script on two versions of pymeta in one sitting, alternating, to see whether a change
made the library slower.

    python benchmarks/compare_versions.py --base eaf37c7 [--rounds 3] -- --sinusoid-iterations 1000 \
        --omniglot-iterations 3 --layout default --skip-miniimagenet --precision float32
    python benchmarks/compare_versions.py --base eaf37c7 --bench rl -- --no_mujoco --meta_iterations 3
    python benchmarks/compare_versions.py --base eaf37c7 --bench mpi -- --ranks 1 2 --iters 4
    python benchmarks/compare_versions.py --base eaf37c7 --bench second_order -- --iterations 10 \
        --maml-steps 5 --skip-hvp

This checkout's `bench_<name>.py` (`--bench`, the same harness for both) runs `--rounds` times on each
version, base and this checkout alternating (base, this, base, this, ...), each run in a fresh process
with `PYTHONPATH` at that version (the base is checked out in a temporary git worktree); the script
writes its rows with `--json-out`. The speed of the machine drifts between minutes, so a row's figure is
the median over the rounds of each run's median, and its range spans every timing window of every
round. Beside the wall-clock figure, the CPU seconds per meta-iteration (all threads; under MPI, all
ranks) are much less sensitive to other load on the machine: a slower code path costs more of them.
Prints one markdown table: a row per benchmark row and version, this checkout's speed as a fraction of
the base's (> 1: faster), and its CPU time per meta-iteration as a fraction of the base's.
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


BENCHES = ("metatrain", "rl", "mpi", "second_order")


def run_bench(bench, version_dir, bench_args, out):
    """One run of benchmarks/bench_<bench>.py on the pymeta at `version_dir`: its rows as
    {"row", "unit", "values" (one per timing window), "cpu_s_per_it" (list)}."""
    env = {**os.environ, "PYTHONPATH": version_dir}
    subprocess.run([sys.executable, os.path.join(HERE, f"bench_{bench}.py"), *bench_args, "--json-out", out],
                   check=True, env=env, cwd=version_dir, stdout=subprocess.DEVNULL)
    with open(out) as f:
        rows = json.load(f)
    for row in rows:
        if bench == "metatrain":
            row.update(row=" / ".join((row["problem"], row["algo"], row["path"], row["precision"])),
                       unit="meta-it/s", values=row["rates"])
        if "pymeta" in row and os.path.realpath(row["pymeta"]) != os.path.realpath(version_dir):
            raise RuntimeError(f"bench_{bench}.py measured the pymeta at {row['pymeta']}, not {version_dir}")
        cpu = row.get("cpu_s_per_it", [])
        row["cpu_s_per_it"] = cpu if isinstance(cpu, list) else [cpu]
    return rows


def speed(values, unit):
    """Higher is faster: seconds per meta-iteration become meta-iterations per second."""
    return [1 / v for v in values] if unit.startswith("s/") else list(values)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the git revision to compare this checkout with")
    parser.add_argument("--rounds", type=int, default=3, help="runs per version, alternating")
    parser.add_argument("--bench", default="metatrain", choices=BENCHES, help="which benchmarks/bench_*.py")
    parser.add_argument("--save", help="also write every round's rows to this JSON file")
    parser.add_argument("bench_args", nargs=argparse.REMAINDER,
                        help="after --: arguments of bench_<name>.py (metatrain: give --layout default or "
                             "task-parallel)")
    args = parser.parse_args()
    bench_args = [a for a in args.bench_args if a != "--"]
    if args.bench == "metatrain" and ("--layout" not in " ".join(bench_args)
                                      or "--layout all" in " ".join(bench_args)):
        parser.error("give bench_metatrain.py one thread layout after --, e.g. -- --layout default")
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"], check=True,
                           capture_output=True, text=True).stdout.strip()
    this = f"{head}{' + changes' if dirty else ''}"
    rates = {}  # (row, version) -> [per-round medians], [all windows], [CPU s/it per window]
    units, saved = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        base_dir = os.path.join(tmp, "base")
        subprocess.run(["git", "-C", REPO, "worktree", "add", "--detach", base_dir, args.base], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for r in range(args.rounds):
                for version, directory in ((args.base, base_dir), (this, REPO)):
                    print(f"round {r + 1}/{args.rounds}: {version}", file=sys.stderr, flush=True)
                    for row in run_bench(args.bench, directory, bench_args, os.path.join(tmp, "rows.json")):
                        saved.append({"round": r + 1, "version": version, **row})
                        units[row["row"]] = row["unit"]
                        medians, windows, cpu = rates.setdefault((row["row"], version), ([], [], []))
                        medians.append(float(np.median(row["values"])))
                        windows.extend(row["values"])
                        cpu.extend(row["cpu_s_per_it"])
        finally:
            subprocess.run(["git", "-C", REPO, "worktree", "remove", "--force", base_dir], check=False)
    if args.save:
        with open(args.save, "w") as f:
            json.dump(saved, f, indent=1)
    print(f"\n`bench_{args.bench}.py {' '.join(bench_args)}`, {args.rounds} alternating rounds per version\n")
    print("| row | version | median of rounds | per-round medians | range (all windows) | speed this / base "
          "| CPU s/meta-it: median (range) | CPU this / base | slower beyond noise |")
    print("|---|---|---:|---|---:|---:|---:|---:|---|")
    for name, unit in units.items():
        base = rates.get((name, args.base))
        for version in (args.base, this):
            if (name, version) not in rates:
                continue
            medians, windows, cpu = rates[(name, version)]
            ratio = cpu_ratio = verdict = ""
            if version == this and base:
                ratio = f"{np.median(speed(medians, unit)) / np.median(speed(base[0], unit)):.2f}"
                slower_wall = max(speed(windows, unit)) < min(speed(base[1], unit))
                if cpu and base[2]:
                    cpu_ratio = f"{np.median(cpu) / np.median(base[2]):.2f}"
                    verdict = "YES" if slower_wall and min(cpu) > max(base[2]) else (
                        "wall time only" if slower_wall else "no")
                else:
                    verdict = "wall time (no CPU figure)" if slower_wall else "no"
            cpu_text = f"{np.median(cpu):.3g} ({min(cpu):.3g}-{max(cpu):.3g})" if cpu else "-"
            print(f"| {name} | {version} | {np.median(medians):.3g} {unit} | "
                  f"{', '.join(f'{m:.3g}' for m in medians)} | {min(windows):.3g}-{max(windows):.3g} | {ratio} | "
                  f"{cpu_text} | {cpu_ratio} | {verdict} |")

if __name__ == "__main__":
    main()
