"""Rejection sampling keeps exactly the chains whose box hits the ground truth; the difficulty
filter keeps exactly the prompts with a success count in range."""
import re

import pytest
from PIL import Image

from dprl.config import load_config
from dprl.config.data_engine import DifficultyConfig, TeacherConfig
from dprl.data.engine.difficulty import difficulty_filter
from dprl.data.engine.teacher import accepted, teacher_samples
from dprl.data.prompts import R1_INSTRUCTION, grounding_question
from stub_engine import stub_asker

GT = {"kalo": [100, 100, 400, 400], "miru": [500, 500, 900, 900], "zeta": [0, 0, 200, 800]}
ROWS = [{"question_id": f"q{i}", "question": grounding_question(name), "entity": name, "domain": "bird",
         "gt_boxes": [box], "image": f"images/q{i}.png"} for i, (name, box) in enumerate(GT.items())]


def _box(b):
    return f"<|box_start|>({b[0]},{b[1]}),({b[2]},{b[3]})<|box_end|>"


def _open(row):
    return Image.new("RGB", (28, 28))


def _answer(name, k):
    """k-th answer about `name`: k = 0 right, 1 right again (same text), 2 half off, 3 no box."""
    x1, y1, x2, y2 = GT[name]
    w = x2 - x1
    return ["<think>a</think><answer>" + _box(GT[name]) + "</answer>",
            "<think>a</think><answer>" + _box(GT[name]) + "</answer>",
            "<think>b</think><answer>" + _box([x1 + w // 2, y1, x2 + w // 2, y2]) + "</answer>",
            "<think>c</think><answer>none</answer>"][k]


def _name(text):
    return re.search(r"the (\w+)<\|object_ref_end\|>", text).group(1)


def test_teacher_keeps_distinct_chains_that_hit_the_box():
    cfg = load_config(TeacherConfig, None, ["keep=2", "iou_threshold=0.3", "rollout.n=4"])
    asker, engine = stub_asker(lambda t, k: _answer(_name(t), k), n=4)
    rows, stats = teacher_samples(asker, ROWS, _open, cfg)
    # Per sample: the exact box (twice: one distinct text) and the half-shifted one (IoU 1/3).
    assert [r["question_id"] for r in rows] == ["q0", "q0-1", "q1", "q1-1", "q2", "q2-1"]
    assert [round(r["teacher_iou"], 3) for r in rows] == [1.0, 0.333] * 3
    assert all(r["prompt"] == r["question"] + R1_INSTRUCTION for r in rows)
    assert stats["chains"] == 12 and stats["accepted_chains"] == 6 and stats["samples_kept"] == 3
    assert stats["acceptance_rate"] == pytest.approx(0.5)
    # The teacher is asked with the template, naming the entity and its domain, with the picture.
    first = engine.asked[0]
    assert "compare each candidate" in first.messages[0]["content"][1]["text"].lower()
    assert len(first.images) == 1
    strict = load_config(TeacherConfig, None, ["keep=2", "iou_threshold=0.5"])
    rows, stats = teacher_samples(stub_asker(lambda t, k: _answer(_name(t), k), n=4)[0], ROWS, _open, strict)
    assert [r["teacher_iou"] for r in rows] == [1.0] * 3 and stats["accepted_chains"] == 3


def test_accepted_orders_by_iou_and_stops_at_keep():
    import numpy as np

    assert accepted(["a", "b", "c", "b"], np.array([0.6, 0.9, 0.2, 0.9]), 0.5, 5) == [("b", 0.9), ("a", 0.6)]
    assert accepted(["a", "b"], np.array([0.6, 0.9]), 0.5, 1) == [("b", 0.9)]
    assert accepted(["a"], np.array([0.1]), 0.5, 1) == []


@pytest.mark.parametrize("range_, kept", [((1, -1), ["q1"]), ((0, 4), ["q0", "q1", "q2"]), ((4, 4), ["q0"])])
def test_difficulty_keeps_the_prompts_with_a_success_count_in_range(range_, kept):
    # q0: all 4 right; q1: 2 of 4; q2: none.
    def policy(text, k):
        name = _name(text)
        right = {"kalo": 4, "miru": 2, "zeta": 0}[name]
        return _answer(name, 0) if k < right else _answer(name, 3)

    cfg = load_config(DifficultyConfig, None, [f"min_success={range_[0]}", f"max_success={range_[1]}", "rollout.n=4"])
    asker, engine = stub_asker(policy, n=4)
    rows, stats = difficulty_filter(asker, ROWS, _open, cfg)
    assert [r["question_id"] for r in rows] == kept
    assert stats["success_histogram"] == {"0": 1, "2": 1, "4": 1}
    assert engine.asked[0].messages[0]["content"][1]["text"] == ROWS[0]["question"] + R1_INSTRUCTION


def test_difficulty_range_is_checked_against_n():
    from dprl.config import ConfigError

    with pytest.raises(ConfigError, match=r"^max_success: .*rollout.n=4"):
        load_config(DifficultyConfig, None, ["max_success=5"])
