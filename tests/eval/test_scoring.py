"""Scoring against hand-computed IoUs, the metrics' averages and the Table-1 layout."""
import dataclasses
import math

import pytest

from dprl.eval.report import markdown_table
from dprl.eval.scoring import metrics, score_choice, score_grounding
from dprl.rewards import ParseOptions

OPTS = ParseOptions(scope="answer", pick="last", formats=("points", "list", "tuple"), coords="auto",
                    swapped="fix", clamp=False)


def test_grounding_scores_match_hand_computed_ious():
    gt = [[[0, 0, 100, 100]], [[0, 0, 100, 100]], [[0, 0, 100, 100], [200, 200, 300, 300]],
          [[0, 0, 100, 100]], [[0, 0, 100, 100]]]
    texts = [
        "<think>x</think><answer><|box_start|>(0,0),(100,100)<|box_end|></answer>",  # IoU 1
        "<think>x</think><answer>(50,0),(150,100)</answer>",  # 5000 / 15000 = 1/3
        "<answer>(200,200),(300,250)</answer>",  # best over 2 GT: 5000 / 10000 = 0.5
        "<|box_start|>(0,0),(100,100)<|box_end|>",  # no <answer>: no box with scope=answer
        "<answer>[0.0, 0.0, 0.1, 0.05]</answer>",  # fractions -> (0,0,100,50): 0.5
    ]
    rows = score_grounding(texts, gt, OPTS, threshold=0.5)
    assert [r["iou"] for r in rows] == pytest.approx([1.0, 1 / 3, 0.5, 0.0, 0.5], abs=1e-6)
    assert [r["correct"] for r in rows] == [True, False, True, False, True]
    assert [r["parse_fail"] for r in rows] == [False, False, False, True, False]
    assert rows[3]["pred_box"] is None and rows[4]["pred_box"] == [0.0, 0.0, 100.0, 50.0]
    anywhere = score_grounding(texts[3:4], gt[3:4], dataclasses.replace(OPTS, scope="anywhere"))
    assert anywhere[0]["iou"] == pytest.approx(1.0)


def test_choice_scores():
    rows = score_choice(["<answer>B</answer>", "<answer>c</answer>", "no letter"], ["B", "A", "A"], "answer")
    assert [r["correct"] for r in rows] == [True, False, False]
    assert [r["parse_fail"] for r in rows] == [False, False, True]


def _row(domain, seen, correct, iou=0.0, fail=False):
    return {"domain": domain, "seen": seen, "correct": correct, "iou": iou, "parse_fail": fail}


def test_metrics_average_over_samples_and_table_layout():
    rows = ([_row("aircraft", True, True, 0.9)] * 3 + [_row("aircraft", True, False, 0.1)]
            + [_row("car", True, False, 0.0, True)] * 2 + [_row("dog", False, True, 0.7)])
    m = metrics(rows)
    assert m["domains"]["aircraft"]["acc"] == 0.75 and m["domains"]["car"]["acc"] == 0.0
    assert m["seen"]["acc"] == pytest.approx(3 / 6) and m["unseen"]["acc"] == 1.0
    assert m["overall"]["acc"] == pytest.approx(4 / 7)
    assert m["overall"]["parse_failures"] == 2
    assert m["domains"]["aircraft"]["mean_iou"] == pytest.approx((0.9 * 3 + 0.1) / 4)
    table = markdown_table({"model-a": m, "model-b": metrics(rows[:4])})
    lines = table.splitlines()
    assert lines[2] == "| model | aircraft | car | seen avg | dog | unseen avg | overall |"
    assert lines[4] == "| model-a | 75.00 | 0.00 | 50.00 | 100.00 | 100.00 | 57.14 |"
    assert lines[5] == "| model-b | 75.00 | - | 75.00 | - | - | 75.00 |"
    assert math.isnan(metrics([])["overall"]["acc"])
