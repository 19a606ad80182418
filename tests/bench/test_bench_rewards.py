"""dprl.rewards (C++, dprl._C) against the pure-Python reference in dprl/rewards/reference.py,
timed as pairs by pytest-benchmark: box parsing, pairwise IoU, and the batched scoring of the
GRPO step (the default reward of `dprl grpo`: format + IoU thresholded at 0.8).

Wall time on CPU whatever the machine: the reward engine never runs on a GPU.
benchmarks/bench_rewards.py is the fuller study (cold calls, thread scaling, per-completion
Python of the original kind).
"""
import numpy as np
import pytest

from dprl.rewards.backend import native_backend
from dprl.config import RewardConfig
from dprl.rewards import RewardFunction, box_iou, from_config, parse_boxes
from dprl.rewards.options import ParseOptions
from dprl.rewards.reference import analyze_reference, box_iou_reference
from side_by_side import IMPLS, assert_arrays_equal, run_pair

pytestmark = [pytest.mark.bench,
              pytest.mark.skipif(native_backend() is None, reason="dprl._C (C++ extension) is not built: "
                                 "dprl would time its own reference")]

COMPLETIONS = {"fast": 512, "full": 8192}
BOXES = {"fast": (256, 256), "full": (2048, 2048)}
WORDS = ("the aircraft on the left has a longer fuselage and four engines so it matches the "
         "query better than the twin jet which is shorter and has winglets").split()


def _size(request, table: dict):
    return table["full" if request.config.getoption("bench_full") else "fast"]


def completions(n: int, seed: int = 0) -> tuple[list[str], list]:
    """n GRPO completions (~200 characters, every box syntax, 10% malformed) and the ground
    truth per completion: one box [4] each, two boxes [2, 4] for every eighth."""
    rng = np.random.default_rng(seed)
    texts, gts = [], []
    for i in range(n):
        x1, y1 = rng.integers(0, 600, 2)
        w, h = rng.integers(50, 400, 2)
        gt = np.array([x1, y1, x1 + w, y1 + h], dtype=np.float32)
        gts.append(np.stack([gt, gt[[2, 3, 0, 1]] * 0.5]) if i % 8 == 0 else gt)
        p = gt + rng.integers(-40, 41, 4)  # near the truth: the 0.8 threshold goes both ways
        think = " ".join(WORDS[int(k)] for k in rng.integers(0, len(WORDS), 30))
        answer = [f"<|box_start|>({p[0]},{p[1]}),({p[2]},{p[3]})<|box_end|>",
                  f"[{p[0]}, {p[1]}, {p[2]}, {p[3]}]",
                  f"({p[0]}, {p[1]}, {p[2]}, {p[3]})",
                  "[{:.3f}, {:.3f}, {:.3f}, {:.3f}]".format(*(np.clip(p, 0, 1000) / 1000))][i % 4]
        text = f"<think>{think}</think>\n<answer>{answer}</answer>"
        if rng.random() < 0.1:
            text = [text[: -len("</answer>")], text.replace("<think>", ""),
                    f"<answer>[{p[0]}, nan, 1e308, 4]</answer>", f"{think} I cannot tell."][i % 4]
        texts.append(text)
    return texts, gts


@pytest.mark.parametrize("impl", IMPLS)
def test_parse_boxes(benchmark, request, impl):
    n = _size(request, COMPLETIONS)
    texts, _ = completions(n)
    runs = {"dprl": lambda: parse_boxes(texts),
            "baseline": lambda: analyze_reference(texts, ParseOptions())[0]}  # (N, 4)
    boxes = run_pair(benchmark, request.config, impl, f"parse_boxes N={n}", runs,
                     assert_arrays_equal, info={"op": "parse_boxes", "n": n})
    assert 0.5 < np.isfinite(boxes).all(1).mean() < 1  # boxes were found, and malformed rows missed


def _boxes(rng, n: int) -> np.ndarray:
    """n float32 boxes (x1, y1, x2, y2) in a 1100-pixel square, 1 to 300 pixels a side."""
    xy = rng.uniform(0, 800, (n, 2))  # (n, 2)
    return np.concatenate([xy, xy + rng.uniform(1, 300, (n, 2))], 1).astype(np.float32)  # (n, 4)


@pytest.mark.parametrize("impl", IMPLS)
def test_box_iou(benchmark, request, impl):
    n, m = _size(request, BOXES)
    rng = np.random.default_rng(1)
    a, b = _boxes(rng, n), _boxes(rng, m)  # (N, 4), (M, 4)
    a[::16] = np.nan  # "no box" rows
    runs = {"dprl": lambda: box_iou(a, b), "baseline": lambda: box_iou_reference(a, b)}  # (N, M)
    iou = run_pair(benchmark, request.config, impl, f"box_iou N={n} M={m}", runs,
                   lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7),
                   info={"op": "box_iou", "n": n, "m": m})
    assert (iou > 0).any()


@pytest.mark.parametrize("impl", IMPLS)
def test_grpo_step_scoring(benchmark, request, impl):
    """The reward call of a GRPO step: the default RewardConfig through from_config (the C++
    fused pass), against the same terms on the Python reference."""
    n = _size(request, COMPLETIONS)
    texts, gts = completions(n, seed=2)
    reward = from_config(RewardConfig())
    reference = RewardFunction(reward.terms, reward.options, use_native=False)

    def scores(fn):
        total, parts = fn.score(texts, boxes=gts)  # (N,), {label: (N,)}
        return total, *(parts[t.label] for t in reward.terms)

    runs = {"dprl": lambda: scores(reward), "baseline": lambda: scores(reference)}
    total = run_pair(benchmark, request.config, impl, f"grpo_step_scoring N={n}", runs,
                     assert_arrays_equal, info={"op": "grpo_step_scoring", "n": n,
                                                "reward": reward.__name__})[0]
    assert 0 < (total > 1).mean() < 1  # the IoU term pays for some completions and not others
