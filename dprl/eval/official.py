"""The official KVG-Bench scorer's rules (`scorer: official`): use this mode for any number that
is set next to the DeepPerception paper's table.

Written from the published description of the benchmark's `evaluate.py`, not from its code:
  * Box reading: a cascade of 8 regular expressions (`RULES`, in priority order) tried over the
    whole reply; the first rule that matches anywhere decides, and its *last* match is the box.
    An `<answer>`-anchored point pair comes first, then a point pair after "So the answer is",
    then point pairs anywhere, then lists and tuples.
  * Numbers: an `x` stuck to a number is stripped ("x120" and "120x" read as 120).
  * Fractions: a box whose four coordinates sum to less than 4 is taken as 0-1 fractions and
    multiplied by 1000 (dprl's own parser instead asks that each coordinate lie in [0, 1]).
  * A box written with x2 < x1 or y2 < y1 is kept as written, so it overlaps nothing (IoU 0).
  * Accuracy: IoU >= threshold (0.5) with the best of the ground-truth boxes; mean IoU too.
  * Seen domains: aircraft, car, reptilia, bird, food; unseen: dog, mollusca, mammal, flower,
    landmark (`SEEN_DOMAINS`, `UNSEEN_DOMAINS`).
dprl's own scorer (`scorer: dprl`) reads the box with the reward parser (`parse` options) and
is the one to use for numbers compared with dprl's GRPO rewards.
"""
from __future__ import annotations

import re

SEEN_DOMAINS = ("aircraft", "car", "reptilia", "bird", "food")
UNSEEN_DOMAINS = ("dog", "mollusca", "mammal", "flower", "landmark")

_N = r"(x?\d+(?:\.\d+)?x?)"  # one coordinate; a stray x on either side is stripped
_C = r"\s*,\s*"
_POINTS = rf"\(\s*{_N}{_C}{_N}\s*\){_C}\(\s*{_N}{_C}{_N}\s*\)"  # (x1,y1),(x2,y2)

# (name, pattern) in priority order; each pattern captures exactly the four coordinates.
RULES = (
    # A point pair inside an <answer> block: the greedy span reaches that block's last pair.
    ("answer_points", re.compile(rf"<answer>(?:(?!</answer>).)*{_POINTS}", re.S)),
    ("so_the_answer_is", re.compile(rf"So the answer is[^\n]*?{_POINTS}", re.I)),
    ("box_token_points", re.compile(rf"<\|box_start\|>\s*{_POINTS}\s*<\|box_end\|>")),
    ("points", re.compile(_POINTS)),
    ("bracket_points", re.compile(rf"\[\s*{_N}{_C}{_N}\s*\]{_C}\[\s*{_N}{_C}{_N}\s*\]")),
    ("list", re.compile(rf"\[\s*{_N}{_C}{_N}{_C}{_N}{_C}{_N}\s*\]")),
    ("tuple", re.compile(rf"\(\s*{_N}{_C}{_N}{_C}{_N}{_C}{_N}\s*\)")),
    ("four_numbers", re.compile(rf"{_N}{_C}{_N}{_C}{_N}{_C}{_N}")),
)


def parse_box(text: str) -> tuple[list[float] | None, str | None]:
    """(box [x1, y1, x2, y2] in 0-1000, the rule that read it) or (None, None)."""
    for name, pattern in RULES:
        matches = pattern.findall(text)
        if matches:
            box = [float(v.replace("x", "")) for v in matches[-1]]
            if sum(box) < 4:  # fractions of the image
                box = [v * 1000 for v in box]
            return box, name
    return None, None


def iou(a: list[float], b: list[float]) -> float:
    """IoU of two x1y1x2y2 boxes as written: an inverted box has no intersection with anything."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def score_official(texts: list[str], gt_boxes: list, threshold: float = 0.5) -> list[dict]:
    """One dict per text, as dprl.eval.scoring.score_grounding gives, plus the rule that read
    the box: pred_box (None when no rule matched), iou, correct, parse_fail, rule."""
    rows = []
    for text, gts in zip(texts, gt_boxes):
        box, rule = parse_box(text)
        best = max((iou(box, list(g)) for g in gts), default=0.0) if box else 0.0
        rows.append({"pred_box": box, "iou": best, "correct": best >= threshold,
                     "parse_fail": box is None, "rule": rule})
    return rows
