"""Rewards: box IoU (and, as the reward engine grows, parsing and scoring) over whole batches.

Each function here runs in C++ (dprl._C) when the extension is built and falls back to the
pure-Python reference in `dprl.rewards.reference` otherwise; both give the same numbers.
"""
from dprl.rewards.iou import box_iou, best_iou

__all__ = ["box_iou", "best_iou"]
