"""DAPO's dynamic sampling: a GRPO batch made of groups that carry a gradient.

A group whose G rewards are all equal has every advantage 0: it adds only the KL term and
dilutes the step (DAPO, Yu et al. 2025, section 3.2). With dynamic sampling a step rolls out
its own prompts, then refill rounds roll out fresh prompts until the batch has
`prompts_per_step` informative groups or `max_rounds` rounds have run. A batch still short
after the last round is filled with zero-variance groups in sampling order, so the batch
geometry (micro-batch x accumulation = prompts x G) never changes and nothing fails; the
shortfall is counted in the metrics.

Refill prompts come from their own seeded stream keyed on (step, round): a resumed run
draws the same prompts, and a step's refills never shift the prompts later steps see.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from dprl.train.advantages import informative_groups


@dataclass
class SampledRound:
    """One rollout round's prompts, completions and scores, groups prompt-major."""

    prompts: list  # (B,) grounding samples
    requests: list  # (B,) rollout requests (the prompt messages and images)
    comps: list  # (B * G,) Completion, the G of a prompt adjacent; prompt_index is into `prompts`
    texts: list[str]  # (B * G,) the answer text each reward read
    rewards: torch.Tensor  # (B * G,) fp32 weighted total
    parts: dict[str, np.ndarray]  # reward term -> (B * G,) before weighting
    accuracy: np.ndarray  # (B * G,) Acc@0.5, logged whatever is trained on

    @property
    def num_groups(self) -> int:
        return len(self.prompts)


def refill_size(missing: int, informative: int, sampled: int, per_step: int) -> int:
    """Prompts the next refill round draws: enough to cover `missing` groups at the informative
    rate seen so far this step (at least `missing`, at most a whole step's worth)."""
    if missing <= 0:
        return 0
    rate = max(informative, 1) / max(sampled, 1)
    return min(per_step, max(missing, math.ceil(missing / rate)))


def count_informative(rounds: list[SampledRound], group_size: int) -> tuple[int, int]:
    """(informative groups, groups sampled) over the rounds so far."""
    informative = sum(int(informative_groups(r.rewards, group_size).sum()) for r in rounds)
    return informative, sum(r.num_groups for r in rounds)


def assemble(rounds: list[SampledRound], per_step: int, group_size: int) -> tuple[SampledRound, dict]:
    """The step's training batch of `per_step` groups: informative groups in sampling order,
    then zero-variance ones if the rounds did not yield enough. -> (batch, metrics)."""
    flags = [informative_groups(r.rewards, group_size).tolist() for r in rounds]
    informative = [(ri, gi) for ri, f in enumerate(flags) for gi, ok in enumerate(f) if ok]
    flat = [(ri, gi) for ri, f in enumerate(flags) for gi, ok in enumerate(f) if not ok]
    keep = set(informative[:per_step] + flat[:max(0, per_step - len(informative))])
    if len(keep) < per_step:
        raise ValueError(f"the rollout rounds hold {len(keep)} groups, fewer than the {per_step} "
                         f"a step trains on")
    order = [(ri, gi) for ri, f in enumerate(flags) for gi in range(len(f)) if (ri, gi) in keep]
    prompts, requests, comps, texts, rows = [], [], [], [], []
    for new, (ri, gi) in enumerate(order):
        r = rounds[ri]
        prompts.append(r.prompts[gi])
        requests.append(r.requests[gi])
        lo, hi = gi * group_size, (gi + 1) * group_size
        comps += [dataclasses.replace(c, prompt_index=new) for c in r.comps[lo:hi]]
        texts += r.texts[lo:hi]
        rows.append((ri, lo, hi))
    batch = SampledRound(
        prompts, requests, comps, texts,
        rewards=torch.cat([rounds[ri].rewards[lo:hi] for ri, lo, hi in rows]),
        parts={k: np.concatenate([rounds[ri].parts[k][lo:hi] for ri, lo, hi in rows]) for k in rounds[0].parts},
        accuracy=np.concatenate([rounds[ri].accuracy[lo:hi] for ri, lo, hi in rows]))
    sampled = len(informative) + len(flat)
    metrics = {
        "sampling/rounds": len(rounds),
        "sampling/groups_sampled": sampled,
        "sampling/zero_variance_fraction": len(flat) / sampled,
        "sampling/shortfall_groups": max(0, per_step - len(informative)),
    }
    return batch, metrics


def reward_metrics(rounds: list[SampledRound]) -> dict[str, float]:
    """Reward and accuracy over every completion the step sampled: the policy's score on fresh
    prompts, not on the groups the filter kept."""
    rewards = torch.cat([r.rewards for r in rounds])  # (S,)
    return {
        "reward/mean": float(rewards.mean()), "reward/std": float(rewards.std()),
        **{f"reward/{k}": float(np.concatenate([r.parts[k] for r in rounds]).mean()) for k in rounds[0].parts},
        "reward/acc@0.5": float(np.concatenate([r.accuracy for r in rounds]).mean()),
    }
