"""Rewards over whole batches: box parsing, IoU and reward scoring.

Parsing, IoU and the built-in rewards run in C++ (dprl._C, GIL released) when the extension is
built and in the pure-Python reference (`dprl.rewards.reference`) otherwise, chosen once per
process in `dprl.rewards.backend`; both give the same numbers.
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
from dprl.rewards.options import BoxFormat, Coords, ParseOptions, Pick, Scope, Swapped
from dprl.rewards.parse import analyze, format_ok, parse_boxes, parse_letters

__all__ = [
    "BUILTIN",
    "BoxFormat",
    "Coords",
    "ParseOptions",
    "Pick",
    "RewardFunction",
    "Scope",
    "Swapped",
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
