"""Rewards over whole batches: box parsing, IoU and reward scoring.

Parsing and IoU run in C++ (dprl._C, GIL released) when the extension is built and fall back to
the pure-Python reference in `dprl.rewards.reference` otherwise; both give the same numbers.
Reward functions follow the contract `fn(completions, **columns) -> list[float]`.
"""
from dprl.rewards.functions import (
    BUILTIN,
    RewardFunction,
    Term,
    available_rewards,
    from_config,
    register_reward,
    reward_fn,
)
from dprl.rewards.iou import best_iou, box_iou
from dprl.rewards.options import ParseOptions
from dprl.rewards.parse import analyze, format_ok, parse_boxes, parse_letters

__all__ = [
    "BUILTIN",
    "ParseOptions",
    "RewardFunction",
    "Term",
    "analyze",
    "available_rewards",
    "best_iou",
    "box_iou",
    "format_ok",
    "from_config",
    "parse_boxes",
    "parse_letters",
    "register_reward",
    "reward_fn",
]
