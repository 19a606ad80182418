"""The text around a sample: query templates, the R1 instruction, box strings.

Shared by the world (which writes SFT targets in these words) and the evaluator (which asks in
them), so training and evaluation see the same prompts.
"""
from __future__ import annotations

import re

# DeepPerception's instruction after the grounding query.
R1_INSTRUCTION = (" Output the thinking process in <think> </think> and final answer (bounding box) "
                  "in <answer> </answer> tags.")
# The same for multiple choice: the answer is a letter.
R1_LETTER_INSTRUCTION = (" Output the thinking process in <think> </think> and final answer (the "
                         "option's letter) in <answer> </answer> tags.")
# cot2's first turn: recall what the named entity looks like before grounding it.
DESCRIBE_TEMPLATE = "What does {entity} look like? Describe its distinguishing features briefly."

_REF = re.compile(r"<\|object_ref_start\|>(.*?)<\|object_ref_end\|>", re.S)
# Qwen2-VL ground-truth boxes: (x1,y1),(x2,y2), optionally inside <|box_start|>..<|box_end|>.
_GT_BOX = re.compile(r"\(\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\)\s*,\s*"
                     r"\(\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\)")


def entity_ref(entity: str) -> str:
    """The entity as a grounding question names it: "<|object_ref_start|>the X<|object_ref_end|>"."""
    return f"<|object_ref_start|>the {entity}<|object_ref_end|>"


def grounding_question(entity: str) -> str:
    return f"Please locate {entity_ref(entity)} in the image."


def box_string(box) -> str:
    """(x1, y1, x2, y2) -> "<|box_start|>(x1,y1),(x2,y2)<|box_end|>" with integer coordinates."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    return f"<|box_start|>({x1},{y1}),({x2},{y2})<|box_end|>"


def referred_entity(question: str) -> str:
    """The text inside <|object_ref_start|>..<|object_ref_end|>, or the whole question."""
    m = _REF.search(question)
    return m.group(1).strip() if m else question.strip()


def answer_boxes(answer: str) -> list[list[float]]:
    """Every Qwen2-VL point-pair box in a ground-truth answer (KVG-Bench may list several)."""
    return [[float(v) for v in m.groups()] for m in _GT_BOX.finditer(answer)]


def hide_name(text: str, name: str) -> str:
    """`text` with an entity's name (and an article before it) said as "it", so a description
    does not give its answer away."""
    out = re.sub(r"(?<!\w)(?:(?:the|a|an) )?" + re.escape(name) + r"(?!\w)", "it", text, flags=re.I)
    return out[:1].upper() + out[1:]
