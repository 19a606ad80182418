"""How far the rollout policy is from the trainer's: measured on the tokens actually sampled.

After a correct sync the two agree to the dtype's precision; a sync that silently failed (stale
weights after sleep/wake, a corrupted partial reload) shows up here as large differences.
"""
from __future__ import annotations

import torch


def importance_ratio(logp_trainer: torch.Tensor, logp_rollout: torch.Tensor) -> torch.Tensor:
    """pi_trainer / pi_rollout per token (differentiable in `logp_trainer`). Both (B, T) fp32."""
    return torch.exp(logp_trainer - logp_rollout.detach())  # (B, T)


@torch.no_grad()
def staleness_metrics(logp_rollout: torch.Tensor, logp_trainer: torch.Tensor,
                      mask: torch.Tensor | None = None) -> dict[str, float]:
    """|logp_rollout - logp_trainer| and the importance ratio over the valid tokens.

    logp_*: (B, T) or (T,) log-probs of the sampled tokens; mask: same shape, True on real
    (non-padding) tokens. Returns plain floats for the trainer's metrics.
    """
    if logp_rollout.shape != logp_trainer.shape:
        raise ValueError(f"staleness_metrics: shapes differ, rollout {tuple(logp_rollout.shape)} "
                         f"vs trainer {tuple(logp_trainer.shape)}")
    if mask is None:
        mask = torch.ones_like(logp_rollout, dtype=torch.bool)
    diff = (logp_trainer.float() - logp_rollout.float())[mask]  # (N,)
    if diff.numel() == 0:
        raise ValueError("staleness_metrics: no valid tokens under the mask")
    ratio = diff.exp()  # (N,)
    return {
        "staleness/abs_logp_diff_mean": diff.abs().mean().item(),
        "staleness/abs_logp_diff_max": diff.abs().max().item(),
        "staleness/ratio_mean": ratio.mean().item(),
        "staleness/ratio_min": ratio.min().item(),
        "staleness/ratio_max": ratio.max().item(),
        "staleness/tokens": int(diff.numel()),
    }
