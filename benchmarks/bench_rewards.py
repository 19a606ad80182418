"""Reward engine speed: dprl (C++) against per-completion Python of the original kind and a tuned
pure-Python version, on the DeepPerception reward (format + IoU thresholded at 0.8).

    python benchmarks/bench_rewards.py [--n 8192] [--repeats 15]

8192 completions of ~200 and of ~1500 characters, a mix of box formats, 10% malformed. Every
variant is checked to give the same rewards before it is timed. Times are end to end: a list of
str and ground-truth boxes in, one float per completion out. Prints a table, a final JSON line,
and appends rows to benchmarks/results/rewards.jsonl.

Two timings of dprl, because a call of 1-3 ms depends on what ran before it:
- steady: calls in a row (each timed call follows an untimed one of its own), what scoring a
  long stream of batches gets. The baselines take 100 ms and more per call and warm themselves.
  All four variants run in turns, in a fresh random order each round, so a slow spell of the
  machine lands on every variant alike and none always inherits another's cache state.
- cold: calls after 50 ms of idleness, which find caches cold and the worker pool asleep, as the
  one reward call of a GRPO step does.

Thread scaling is judged against what a second thread buys this machine on plain compute
(SHA-256 on two threads, measured in the same run): virtual CPUs often give well under 2x.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from harness import (append_rows, environment, interleaved_median_times,  # noqa: E402
                     machine_scaling_2t)

from dprl.rewards.backend import native_backend  # noqa: E402
from dprl.rewards import RewardFunction  # noqa: E402

TAU = 0.8
WORDS = ("the aircraft on the left has a longer fuselage and four engines so it matches the "
         "query better than the twin jet which is shorter and has winglets near the tail").split()


# ---------------------------------------------------------------------------------------------
# Data: completions as a GRPO rollout would return them
# ---------------------------------------------------------------------------------------------
def make_batch(n: int, think_chars: int, seed: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    texts, gts = [], np.zeros((n, 4), dtype=np.float32)  # (N, 4)
    for i in range(n):
        x1, y1 = rng.integers(0, 600, 2)
        w, h = rng.integers(50, 400, 2)
        gt = np.array([x1, y1, x1 + w, y1 + h], dtype=np.float32)
        gts[i] = gt
        # Predictions near the GT so the thresholded reward takes both branches.
        p = gt + rng.integers(-40, 41, 4)
        words = []
        while sum(len(w) + 1 for w in words) < think_chars:
            words.append(WORDS[int(rng.integers(len(WORDS)))])
        think = " ".join(words)
        kind = int(rng.integers(5))
        if kind == 0:
            answer = f"<|box_start|>({p[0]},{p[1]}),({p[2]},{p[3]})<|box_end|>"
        elif kind == 1:
            answer = f"[{p[0]}, {p[1]}, {p[2]}, {p[3]}]"
        elif kind == 2:
            answer = f'{{"bbox_2d": [{p[0]}, {p[1]}, {p[2]}, {p[3]}], "label": "Boeing 767"}}'
        elif kind == 3:
            answer = f"({p[0]}, {p[1]}, {p[2]}, {p[3]})"
        else:
            answer = "[{:.3f}, {:.3f}, {:.3f}, {:.3f}]".format(*(np.clip(p, 0, 1000) / 1000))
        text = f"<think>{think}</think>\n<answer>{answer}</answer>"
        if rng.random() < 0.10:  # malformed
            bad = int(rng.integers(4))
            if bad == 0:
                text = text[: -len("</answer>")]
            elif bad == 1:
                text = text.replace("<think>", "")
            elif bad == 2:
                text = f"<think>{think}</think>\n<answer>[{p[0]}, {p[1]}, nan, 1e308]</answer>"
            else:
                text = f"{think} I cannot tell."
        texts.append(text)
    return texts, gts


# ---------------------------------------------------------------------------------------------
# (a) the original style: per completion, several regex passes, a per-pair IoU in Python
# ---------------------------------------------------------------------------------------------
def iou_python(b1, b2) -> float:
    if not all(math.isfinite(v) for v in b1 + b2) or b1[2] <= b1[0] or b1[3] <= b1[1]:
        return 0.0
    ix1, iy1, ix2, iy2 = max(b1[0], b2[0]), max(b1[1], b2[1]), min(b1[2], b2[2]), min(b1[3], b2[3])
    if ix2 <= ix1 or iy2 <= iy1:
        return 0.0
    inter = (ix2 - ix1) * (iy2 - iy1)
    union = (b1[2] - b1[0]) * (b1[3] - b1[1]) + (b2[2] - b2[0]) * (b2[3] - b2[1]) - inter
    return inter / union


def original_rewards(completions: list[str], gts: np.ndarray) -> list[float]:
    num = r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
    f = r"[ \t\r\n]*" + num + r"[ \t\r\n]*"
    patterns = [
        r"\(" + f + "," + f + r"\)[ \t\r\n]*,[ \t\r\n]*\(" + f + "," + f + r"\)",
        r"\[" + f + "," + f + "," + f + "," + f + r"\]",
        r"\(" + f + "," + f + "," + f + "," + f + r"\)",
    ]
    rewards = []
    for content, sol in zip(completions, gts.tolist()):
        fmt = 0.0
        if re.fullmatch(r"[ \t\r\n]*<think>(?:(?!</think>).)*</think>[ \t\r\n]*<answer>"
                        r"(?:(?!</answer>).)*</answer>[ \t\r\n]*", content, re.DOTALL):
            fmt = 0.5
        iou = 0.0
        m = re.search(r"<answer>(.*?)</answer>", content, re.DOTALL)
        box = None
        if m:
            answer = m.group(1)
            found = []
            for pat in patterns:  # one pass per syntax, then the last match overall
                for mm in re.finditer(pat, answer):
                    found.append((mm.start(), [float(g) for g in mm.groups()]))
            if found:
                box = max(found)[1]
        if box is not None:
            if all(0.0 <= v <= 1.0 for v in box):
                box = [v * 1000.0 for v in box]
            if all(math.isfinite(v) and abs(v) <= 3.4028234663852886e38 for v in box):
                box = [min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])]
                box = [float(np.float32(v)) for v in box]
                fmt += 0.5
                iou = iou_python(box, sol)
            else:
                box = None
        rewards.append(fmt + (iou if iou >= TAU else 0.0))
    return rewards


# ---------------------------------------------------------------------------------------------
# (b) tuned pure Python: precompiled regexes, one pass per text, numpy IoU over the batch
# ---------------------------------------------------------------------------------------------
_NUM = r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
_F = r"[ \t\r\n]*" + _NUM + r"[ \t\r\n]*"
_BOX = re.compile("|".join([
    r"\(" + _F + "," + _F + r"\)[ \t\r\n]*,[ \t\r\n]*\(" + _F + "," + _F + r"\)",
    r"\[" + _F + "," + _F + "," + _F + "," + _F + r"\]",
    r"\(" + _F + "," + _F + "," + _F + "," + _F + r"\)",
]))
_FORMAT = re.compile(r"[ \t\r\n]*<think>(?:(?!</think>).)*</think>[ \t\r\n]*<answer>"
                     r"(?:(?!</answer>).)*</answer>[ \t\r\n]*", re.DOTALL)


def tuned_rewards(completions: list[str], gts: np.ndarray) -> np.ndarray:
    n = len(completions)
    boxes = np.full((n, 4), np.nan)  # (N, 4)
    fmt = np.zeros(n)  # (N,)
    for i, c in enumerate(completions):
        fmt[i] = _FORMAT.fullmatch(c) is not None
        a = c.find("<answer>")
        e = c.find("</answer>", a + 8) if a >= 0 else -1
        if e < 0:
            continue
        last = None
        for last in _BOX.finditer(c, a + 8, e):
            pass
        if last is not None:
            boxes[i] = [float(g) for g in last.groups() if g is not None]
    with np.errstate(invalid="ignore", over="ignore"):
        frac = ((boxes >= 0) & (boxes <= 1)).all(1)  # (N,)
        boxes[frac] *= 1000.0
        ok = (np.isfinite(boxes) & (np.abs(boxes) <= np.finfo(np.float32).max)).all(1)  # (N,)
        boxes[~ok] = np.nan
        boxes = np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]),
                                np.maximum(boxes[:, :2], boxes[:, 2:])], 1).astype(np.float32)
        b, g = boxes.astype(np.float64), gts.astype(np.float64)  # (N, 4)
        iw = np.minimum(b[:, 2], g[:, 2]) - np.maximum(b[:, 0], g[:, 0])  # (N,)
        ih = np.minimum(b[:, 3], g[:, 3]) - np.maximum(b[:, 1], g[:, 1])  # (N,)
        inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
        union = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) + (g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1]) - inter
        valid = ok & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        iou = np.where(valid & (inter > 0), inter / np.where(valid, union, 1.0), 0.0).astype(np.float32)
    return 0.5 * fmt + 0.5 * ok + np.where(iou >= np.float32(TAU), iou, 0.0)


# ---------------------------------------------------------------------------------------------
# Timing and reporting
# ---------------------------------------------------------------------------------------------
def cold_median_times(fns: dict, repeats: int, idle_s: float = 0.05) -> dict:
    """Median time of each fn() when every call comes after `idle_s` of idleness (longer than
    the worker pool spins, 10 ms by default), as the one reward call of a GRPO step does. Idle
    machines also lose caches and clock speed, so compare cold with cold only."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            time.sleep(idle_s)
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--no-save", action="store_true", help="do not append to the results file")
    args = ap.parse_args()
    if native_backend() is None:
        sys.exit("dprl._C is not built: python setup.py build_ext --inplace")

    env = environment()
    ceiling = machine_scaling_2t()
    rows = []
    for think in (170, 1450):
        texts, gts = make_batch(args.n, think, seed=think)
        nbytes = sum(len(t.encode()) for t in texts)
        one = RewardFunction([("format", 1.0), ("iou_threshold", 1.0)], max_threads=1)
        two = RewardFunction([("format", 1.0), ("iou_threshold", 1.0)], max_threads=2)
        ours = np.asarray(one(texts, boxes=gts))
        # Same rewards from every variant before anything is timed.
        np.testing.assert_allclose(np.asarray(two(texts, boxes=gts)), ours, rtol=0, atol=0)
        np.testing.assert_allclose(tuned_rewards(texts, gts), ours, rtol=0, atol=1e-6)
        np.testing.assert_allclose(original_rewards(texts, gts), ours, rtol=0, atol=1e-6)

        t = interleaved_median_times({"orig": lambda: original_rewards(texts, gts),
                                      "tuned": lambda: tuned_rewards(texts, gts),
                                      "one": lambda: one(texts, boxes=gts),
                                      "two": lambda: two(texts, boxes=gts)}, args.repeats,
                                     shuffle_seed=think, lead_in=("one", "two"))
        t_orig, t_tuned, t_one, t_two = t["orig"], t["tuned"], t["one"], t["two"]
        cold = cold_median_times({"one": lambda: one(texts, boxes=gts),
                                  "two": lambda: two(texts, boxes=gts)}, args.repeats * 3)
        rows.append({
            "bench": "rewards", "timing": "steady+cold", "n": args.n,
            "mean_chars": round(nbytes / args.n), "bytes": nbytes, "mean_reward": float(ours.mean()),
            "original_ms": t_orig * 1e3, "tuned_ms": t_tuned * 1e3,
            "dprl_1t_ms": t_one * 1e3, "dprl_2t_ms": t_two * 1e3, "dprl_1t_cold_ms": cold["one"] * 1e3,
            "dprl_2t_cold_ms": cold["two"] * 1e3, "scaling_2t_cold": cold["one"] / cold["two"],
            "speedup_vs_original_2t": t_orig / t_two,
            "speedup_vs_original": t_orig / t_one, "speedup_vs_tuned": t_tuned / t_one,
            "speedup_vs_original_cold": t_orig / cold["one"],
            "gbps_1t": nbytes / t_one / 1e9, "gbps_2t": nbytes / t_two / 1e9,
            "gbps_1t_cold": nbytes / cold["one"] / 1e9,
            "scaling_2t": t_one / t_two, "machine_scaling_2t": ceiling,
            "scaling_vs_machine": t_one / t_two / ceiling,
        })

    head = ("chars", "original ms", "tuned ms", "dprl 1t ms", "dprl 2t ms", "1t cold ms", "2t cold ms",
            "x orig 1t", "x orig 2t", "x tuned 1t", "x orig cold", "GB/s 1t", "GB/s 2t", "GB/s cold",
            "2t scaling", "of machine")
    print(f"reward engine, {args.n} completions, format + iou_threshold@{TAU}, {env['device']}; "
          f"dprl steady (calls in a row) and cold (after 50 ms idle; 'x orig cold', 'GB/s cold' "
          f"on one thread); a second thread buys {ceiling:.2f}x on plain compute here (SHA-256)")
    print(" | ".join(f"{h:>11}" for h in head))
    for r in rows:
        vals = (r["mean_chars"], r["original_ms"], r["tuned_ms"], r["dprl_1t_ms"], r["dprl_2t_ms"],
                r["dprl_1t_cold_ms"], r["dprl_2t_cold_ms"], r["speedup_vs_original"],
                r["speedup_vs_original_2t"], r["speedup_vs_tuned"], r["speedup_vs_original_cold"],
                r["gbps_1t"], r["gbps_2t"], r["gbps_1t_cold"], r["scaling_2t"], r["scaling_vs_machine"])
        print(" | ".join(f"{v:>11.2f}" if isinstance(v, float) else f"{v:>11}" for v in vals))
    if not args.no_save:
        append_rows("rewards", rows)
    summary = {f"{r['mean_chars']}c": {k: round(r[k], 3) for k in (
        "speedup_vs_original", "speedup_vs_original_2t", "speedup_vs_tuned", "speedup_vs_original_cold",
        "gbps_1t", "gbps_2t", "gbps_1t_cold", "scaling_2t", "scaling_vs_machine", "scaling_2t_cold")}
        for r in rows}
    print(json.dumps({"bench": "rewards", "n": args.n, **summary, "commit": env["commit"]}))


if __name__ == "__main__":
    main()
