"""Time and peak memory of the dataset loaders on hostile files whose cost used to grow faster than the
file (issue #38, item 3): each case is built in a temporary folder and loaded in its own subprocess
(under an address-space limit, so that a regression cannot take the machine), which reports the wall
time, the rise of its peak RSS over the imports (0 when the loader stays below what importing numpy and
h5py took), optionally the peak of Python's allocations (--tracemalloc), and the error's first line.

    PYTHONPATH=. python benchmarks/bench_hostile_loaders.py [--mb 4] [--keys 100000] [--cases tuple1 ...]

Cases (MB: --mb megabytes of opcodes):
  tuple1         N then MB of TUPLE1 opcodes (a tuple nested MB million deep)
  empty_lists    a list of MB million empty lists (MARK, EMPTY_LIST..., LIST)
  empty_dicts    a list of MB million empty dicts
  memo_flood     None memoised MB million times (MEMOIZE)
  marks          MB million MARK opcodes
  empty_arrays   a list of MB/5 million empty numpy arrays sharing one memoised constructor call
  collide_keys   a dict of --keys int keys that all hash to 0 (i * (2**61 - 1)), about 11 bytes a key, in
                 SETITEMS batches of 1,000 as pickle writes them
  h5_gzip_zeros  a Mini-ImageNet HDF5 file whose train/X is gzip of zeros: --h5-gb GB declared in ~1/1000
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, resource, sys, time
limit = int(sys.argv[3]) * 2 ** 20
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from pymeta.data import load_miniimagenet, safe_load
if sys.argv[1] != "safe_load":
    import h5py  # noqa: F401  (before the baseline: the loader imports it)
fn = {"safe_load": safe_load, "miniimagenet": load_miniimagenet}[sys.argv[1]]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if sys.argv[4] == "1":
    import tracemalloc
    tracemalloc.start()
start = time.perf_counter()
error = None
try:
    fn(sys.argv[2])
except BaseException as e:
    error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
out = {"seconds": time.perf_counter() - start, "error": error,
       "peak_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}
if sys.argv[4] == "1":
    out["traced_mb"] = tracemalloc.get_traced_memory()[1] / 2 ** 20
print(json.dumps(out))
"""


def pickle_cases(mb, keys):
    n = int(mb * 2 ** 20)
    glob = b"\x8c\x16numpy._core.multiarray\x94\x8c\x0c_reconstruct\x94\x93\x94"  # memo 0, 1, 2
    args = b"\x8c\x05numpy\x94\x8c\x07ndarray\x94\x93\x94K\x00\x85\x94C\x01b\x94\x87\x94"  # memo 3..8
    one_array = b"h\x02h\x08R"  # _reconstruct(ndarray, (0,), b'b'): 5 bytes
    long1 = lambda v: b"\x8a" + bytes([(v.bit_length() + 8) // 8]) + v.to_bytes((v.bit_length() + 8) // 8, "little")
    pairs = [long1(i * (2 ** 61 - 1)) + b"N" for i in range(1, keys + 1)]
    pairs = b"".join(b"(" + b"".join(pairs[i:i + 1000]) + b"u" for i in range(0, keys, 1000))  # as pickle batches
    return {
        "tuple1": b"\x80\x04N" + b"\x85" * n + b".",
        "empty_lists": b"\x80\x04(" + b"]" * n + b"l.",
        "empty_dicts": b"\x80\x04(" + b"}" * n + b"l.",
        "memo_flood": b"\x80\x04N" + b"\x94" * n + b".",
        "marks": b"\x80\x04N" + b"(" * n + b".",
        "empty_arrays": b"\x80\x04" + glob + args + b"(" + one_array * (n // 5) + b"l.",
        "collide_keys": b"\x80\x04}" + pairs + b".",
    }


def write_h5_zeros(path, gb):
    """train/X of `gb` GB of zeros, every chunk written (as one precompressed chunk repeated)."""
    import zlib

    import h5py
    import numpy as np
    chunk = (64, 84, 84, 3)
    n_chunks = max(1, int(gb * 1e9 // np.prod(chunk)))
    packed = zlib.compress(bytes(int(np.prod(chunk))), 9)
    with h5py.File(path, "w") as f:
        f.attrs["pymeta_dataset"] = "miniimagenet"
        for split in ("train", "val", "test"):
            g = f.create_group(split)
            if split == "train":
                X = g.create_dataset("X", shape=(n_chunks * 64, 84, 84, 3), dtype=np.uint8, chunks=chunk,
                                     compression="gzip")
                for i in range(n_chunks):
                    X.id.write_direct_chunk((i * 64, 0, 0, 0), packed)
                g.create_dataset("y", data=np.zeros(n_chunks * 64, np.int64), compression="gzip")
            else:
                g.create_dataset("X", data=np.zeros((2, 84, 84, 3), np.uint8))
                g.create_dataset("y", data=np.zeros(2, np.int64))


def run(loader, path, limit_mb, timeout, traced):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]),
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD, loader, path, str(limit_mb), "1" if traced else "0"],
                              capture_output=True,
                              text=True, timeout=timeout, env=env, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"seconds": float(timeout), "error": f"(killed after the {timeout} s timeout)", "peak_mb": float("nan")}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        return {"seconds": float("nan"), "error": f"(exit {proc.returncode}) {proc.stderr.strip()[-200:]}",
                "peak_mb": float("nan")}
    return json.loads(lines[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=float, default=4.0, help="size of the opcode floods in MiB (default 4)")
    p.add_argument("--keys", type=int, default=100_000, help="keys of the colliding dict (default 100,000)")
    p.add_argument("--h5-gb", type=float, default=2.0, help="GB of zeros declared by the HDF5 case (default 2)")
    p.add_argument("--cases", nargs="+", default=None, help="run only these cases")
    p.add_argument("--limit-mb", type=int, default=8192, help="address-space limit of each child (MiB)")
    p.add_argument("--timeout", type=int, default=300, help="seconds before a case is killed")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    p.add_argument("--tracemalloc", action="store_true",
                   help="also report the peak of Python's allocations (tracemalloc; slows the loader about 2x)")
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = {name: ("safe_load", data) for name, data in pickle_cases(a.mb, a.keys).items()}
        cases["h5_gzip_zeros"] = ("miniimagenet", None)
        for name, (loader, data) in cases.items():
            if a.cases and name not in a.cases:
                continue
            path = os.path.join(tmp, name + (".h5" if data is None else ".pkl"))
            if data is None:
                write_h5_zeros(path, a.h5_gb)
            else:
                with open(path, "wb") as f:
                    f.write(data)
            out = run(loader, path, a.limit_mb, a.timeout, a.tracemalloc)
            out.update(case=name, file_mb=os.path.getsize(path) / 2 ** 20)
            rows.append(out)
            traced = f"  traced {out['traced_mb']:7.1f} MiB" if "traced_mb" in out else ""
            print(f"{name:14s} file {out['file_mb']:7.2f} MiB  {out['seconds']:7.2f} s  peak RSS +{out['peak_mb']:8.1f} MiB"
                  f"{traced}  {(out['error'] or 'loaded')[:150]}", flush=True)
            os.remove(path)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
