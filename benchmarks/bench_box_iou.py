"""Pairwise box IoU: dprl._C against the numpy reference, in the same run.

    python benchmarks/bench_box_iou.py [--sizes 64x64 1024x16 2048x2048] [--repeats 7]

Prints a table, a final JSON line, and appends rows to benchmarks/results/box_iou.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import append_rows, median_time, print_table  # noqa: E402

from dprl.rewards.backend import native_backend  # noqa: E402
from dprl.rewards.reference import box_iou_reference  # noqa: E402


def random_boxes(rng, n: int) -> np.ndarray:
    xy = rng.uniform(0, 900, size=(n, 2))
    wh = rng.uniform(1, 300, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)  # (n, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["64x64", "8192x4", "2048x2048"])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    native = native_backend()
    if native is None:
        raise SystemExit("dprl._C is not built: run scripts/setup.sh first")
    rng = np.random.default_rng(0)
    rows = []
    for size in args.sizes:
        n, m = (int(x) for x in size.split("x"))
        a, b = random_boxes(rng, n), random_boxes(rng, m)
        assert np.allclose(native.box_iou(a, b), box_iou_reference(a, b), atol=1e-6)
        t_ref = median_time(lambda: box_iou_reference(a, b), args.repeats)
        t_1 = median_time(lambda: native.box_iou(a, b, max_threads=1), args.repeats)
        t_all = median_time(lambda: native.box_iou(a, b), args.repeats)
        rows.append({"bench": "box_iou", "n": n, "m": m, "numpy_ms": t_ref * 1e3, "cpp_1t_ms": t_1 * 1e3,
                     "cpp_ms": t_all * 1e3, "speedup_vs_numpy": t_ref / t_all,
                     "thread_scaling": t_1 / t_all, "mpairs_per_s": n * m / t_all / 1e6})
    print_table(rows, ["n", "m", "numpy_ms", "cpp_1t_ms", "cpp_ms", "speedup_vs_numpy", "thread_scaling", "mpairs_per_s"])
    path = append_rows("box_iou", rows)
    print(f"appended to {os.path.relpath(path)}")
    print(json.dumps({"bench": "box_iou", "speedup_vs_numpy": {f"{r['n']}x{r['m']}": round(r["speedup_vs_numpy"], 2) for r in rows}}))


if __name__ == "__main__":
    main()
