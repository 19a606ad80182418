"""Which samples go into which micro-batch, on which rank: a pure function of (seed, epoch, index).

Nothing here holds an iterator state, so resuming at optimizer step s only needs s: the plan
recomputes the same permutation and starts at the micro-batch that step would have drawn.
Every micro-batch holds `micro_batch_size` grounding samples (so every rank runs the vision tower
on every micro-batch: under ZeRO-3 its parameter gathers are collective, and a rank that skipped
them would hang the others) plus `knowledge_per_batch` samples from the knowledge corpus, each
asked as text only or next to a picture of the grounding set (`pictures`).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch


def _mix(*parts: int) -> int:
    """A stable seed from the parts, so (1, 2) and (2, 1) differ."""
    seed = 0
    for part in parts:
        seed = (seed * 1_000_003 + int(part)) % (2**63 - 1)
    return seed


@lru_cache(maxsize=8)
def _permutation(n: int, *seed_parts: int) -> tuple[int, ...]:
    g = torch.Generator()
    g.manual_seed(_mix(*seed_parts))
    return tuple(torch.randperm(n, generator=g).tolist())


@dataclass(frozen=True)
class BatchPlan:
    num_samples: int  # grounding samples
    num_knowledge: int  # text-only knowledge samples (0: none mixed in)
    micro_batch_size: int  # grounding samples per micro-batch per rank
    knowledge_per_batch: int  # knowledge samples added to each micro-batch
    grad_accum_steps: int
    world_size: int = 1
    rank: int = 0
    seed: int = 0
    shuffle: bool = True

    def __post_init__(self):
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"{self.num_samples} samples are fewer than one optimizer step takes "
                f"(micro_batch_size {self.micro_batch_size} x grad_accum_steps {self.grad_accum_steps} "
                f"x {self.world_size} ranks)")
        if self.knowledge_per_batch and not self.num_knowledge:
            raise ValueError("knowledge_per_batch > 0 but the knowledge corpus is empty")

    @property
    def samples_per_step(self) -> int:
        return self.micro_batch_size * self.grad_accum_steps * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per pass over the grounding data; the remainder is dropped so all
        ranks run the same number of micro-batches."""
        return self.num_samples // self.samples_per_step

    def micro_batch(self, step: int, micro: int) -> tuple[list[int], list[int]]:
        """(grounding indices, knowledge indices) of micro-batch `micro` (< grad_accum_steps) of
        optimizer step `step` (counted from the start of training, across epochs) on this rank."""
        epoch, step_in_epoch = divmod(step, self.steps_per_epoch)
        order = (_permutation(self.num_samples, self.seed, epoch) if self.shuffle
                 else range(self.num_samples))
        # Global micro-batch slot, interleaved over ranks: rank r takes every world_size-th slot.
        slot = (step_in_epoch * self.grad_accum_steps + micro) * self.world_size + self.rank
        start = slot * self.micro_batch_size
        grounding = list(order[start:start + self.micro_batch_size])
        knowledge = []
        if self.knowledge_per_batch:
            # The corpus is cycled through in its own shuffled passes, independent of epochs.
            global_slot = (step * self.grad_accum_steps + micro) * self.world_size + self.rank
            for j in range(self.knowledge_per_batch):
                k = global_slot * self.knowledge_per_batch + j
                cycle, pos = divmod(k, self.num_knowledge)
                perm = (_permutation(self.num_knowledge, self.seed, 1_000_000 + cycle) if self.shuffle
                        else range(self.num_knowledge))
                knowledge.append(perm[pos])
        return grounding, knowledge

    def pictures(self, step: int, micro: int, share: float) -> list[int | None]:
        """For each knowledge sample of `micro_batch(step, micro)`: the grounding sample whose
        picture it is asked next to, or None (text only), `share` of them on average. Drawn
        from (seed, step, micro, rank) alone, so a resumed run draws the same pictures."""
        g = torch.Generator()
        g.manual_seed(_mix(self.seed, 2_000_000, step, micro, self.rank))
        draws = torch.rand(self.knowledge_per_batch, generator=g).tolist()
        picks = torch.randint(self.num_samples, (self.knowledge_per_batch,), generator=g).tolist()
        return [p if d < share else None for d, p in zip(draws, picks)]
