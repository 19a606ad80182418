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
                 seed: int) -> list[int]:
    """Sample indices for `rank` at `step`: epochs of a seeded permutation, consumed in order."""
    if num_samples < 1:
        raise ValueError("no training samples")
    start = (step * world + rank) * per_rank
    out = []
    for k in range(start, start + per_rank):
        epoch, pos = divmod(k, num_samples)
        out.append(int(_permutation(seed, epoch, num_samples)[pos]))
    return out


@lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)
