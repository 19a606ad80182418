"""Group-relative advantages (GRPO), vectorised over the whole rollout batch.

GRPO samples G completions per prompt and scores each against its own group:
    A_i = (r_i - mean(r_group)) / (std(r_group) + eps)        (GRPO, DeepPerception: eps = 1e-4)
    A_i =  r_i - mean(r_group)                                 (Dr. GRPO: no std normalisation)
std is the unbiased sample std (torch's default), as in the original DeepPerception/R1-V code.
A group whose rewards are all equal has every advantage 0 and contributes no policy gradient
(only the KL term); such groups are reported, and DAPO-style dynamic sampling drops them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

MODES = ("std", "mean_only")


@dataclass
class GroupAdvantages:
    advantages: torch.Tensor  # (B * G,) fp32, same order as the rewards
    group_mean: torch.Tensor  # (B,)
    group_std: torch.Tensor  # (B,)
    zero_variance: torch.Tensor  # (B,) bool: all rewards of the group equal

    @property
    def num_zero_variance(self) -> int:
        return int(self.zero_variance.sum())


def group_advantages(rewards: torch.Tensor, group_size: int, mode: str = "std",
                     eps: float = 1e-4) -> GroupAdvantages:
    """rewards: (B * G,) with the G completions of a prompt adjacent -> GroupAdvantages."""
    if mode not in MODES:
        raise ValueError(f"advantage mode must be one of {MODES}, got {mode!r}")
    if group_size < 2:
        raise ValueError(f"group_size must be at least 2 for group-relative advantages, got {group_size}")
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be 1-D with a multiple of group_size={group_size} entries, "
                         f"got shape {tuple(rewards.shape)}")
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards contain NaN or inf; reward functions must return finite values")
    r = rewards.float().view(-1, group_size)  # (B, G)
    mean = r.mean(dim=1)  # (B,)
    std = r.std(dim=1)  # (B,) unbiased
    # Exact equality, not std < tol: rewards like IoU are continuous, so near-equal is still signal.
    zero_var = (r == r[:, :1]).all(dim=1)  # (B,)
    centred = r - mean[:, None]  # (B, G)
    adv = centred / (std[:, None] + eps) if mode == "std" else centred  # (B, G)
    adv = torch.where(zero_var[:, None], torch.zeros_like(adv), adv)  # exact zeros, no 0/eps noise
    return GroupAdvantages(adv.reshape(-1), mean, std, zero_var)


def informative_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(B,) bool: groups whose rewards are not all equal (DAPO's dynamic-sampling filter)."""
    r = rewards.view(-1, group_size)  # (B, G)
    return ~(r == r[:, :1]).all(dim=1)
