"""The built-in reward terms that one fused pass scores (dprl._C.score_batch, or
reference.score_batch_reference without the extension)."""
from __future__ import annotations

from enum import Enum
from typing import NamedTuple


class TermKind(str, Enum):
    """A built-in term by its reward name; dprl._C.TermKind has the same member names."""

    FORMAT = "format"  # 0.5 for <think>..</think><answer>..</answer> + 0.5 for a box in the answer
    IOU = "iou"  # best IoU over the sample's ground-truth boxes
    IOU_THRESHOLD = "iou_threshold"  # IoU if IoU >= tau else 0
    IOU_SQUARED = "iou_squared"  # IoU * IoU
    ACC = "acc"  # 1 if IoU >= tau else 0

    @classmethod
    def of(cls, name: str) -> TermKind | None:
        """The kind a reward name scores, or None for a reward the fused pass does not know."""
        try:
            return cls(name)
        except ValueError:
            return None


class FusedTerm(NamedTuple):
    """What the fused pass reads of one term: its kind, its threshold (None: none) and weight."""

    kind: TermKind | None
    tau: float | None
    weight: float
