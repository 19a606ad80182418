"""Which prompts a GRPO step sees, and how a grounding sample becomes a rollout request.

The order is a pure function of (shuffle seed, step, rank): a resumed run and an uninterrupted
one draw the same prompts, and each rank of a multi-process run takes a disjoint share.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from dprl.data.prompts import R1_INSTRUCTION  # the instruction SFT data and eval prompts use
from dprl.rollout.base import RolloutRequest


def grounding_request(question: str, image) -> RolloutRequest:
    content = [{"type": "image"}, {"type": "text", "text": question + R1_INSTRUCTION}]
    return RolloutRequest(messages=[{"role": "user", "content": content}], images=[image])


def step_indices(num_samples: int, step: int, per_rank: int, rank: int, world: int,
                 seed: int, stream: int = 0) -> list[int]:
    """Sample indices for `rank` at `step`: epochs of a seeded permutation, consumed in order.
    `stream` > 0 picks an independent order over the same samples (dynamic sampling's refills)."""
    if num_samples < 1:
        raise ValueError("no training samples")
    start = (step * world + rank) * per_rank
    out = []
    for k in range(start, start + per_rank):
        epoch, pos = divmod(k, num_samples)
        out.append(int(_permutation(seed, epoch, num_samples, stream)[pos]))
    return out


def refill_indices(num_samples: int, step: int, round_: int, count: int, per_rank: int, rank: int,
                   world: int, seed: int, max_rounds: int) -> list[int]:
    """The first `count` (<= per_rank) prompts of refill round `round_` (>= 1) of `step`: slots of
    stream 1 keyed on (step, round), so they depend on nothing a resumed run could lose."""
    if not 1 <= round_ < max_rounds or not 0 <= count <= per_rank:
        raise ValueError(f"refill round {round_} of {max_rounds}, {count} of {per_rank} prompts")
    slot = step * max_rounds + round_
    return step_indices(num_samples, slot, per_rank, rank, world, seed, stream=1)[:count]


@lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, n: int, stream: int = 0) -> np.ndarray:
    key = [seed, epoch] if stream == 0 else [seed, epoch, stream]  # stream 0: the original order
    return np.random.default_rng(key).permutation(n)
