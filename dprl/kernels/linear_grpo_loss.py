"""GRPO loss straight from hidden states: linear_logprob (log-probs and entropy from the same
vocabulary pass) feeding grpo_loss.

Fusing the token loss into the vocabulary kernel would save no pass over N x V: the loss needs only
[N] scalars per token (logp, entropy), which the vocabulary pass already emits, and its gradient
is one [N] vector that the single recompute pass of the backward consumes. So the fusion that
matters is log-prob + entropy in one pass, with one recompute in the backward.
"""
from __future__ import annotations

import torch

from dprl.kernels._common import resolve_backend
from dprl.kernels.grpo_loss import GRPOLossParams, grpo_loss, grpo_loss_reference
from dprl.kernels.linear_logprob import linear_logprob, linear_logprob_reference


def linear_grpo_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                     advantages: torch.Tensor, mask: torch.Tensor | None = None, *,
                     old_logp=None, ref_logp=None, rollout_logp=None, seq_index=None, num_seqs=None,
                     num_tokens=None, temperature: float = 1.0, params: GRPOLossParams = GRPOLossParams(),
                     exclude_ids: torch.Tensor | None = None, chunk_rows: int | None = None,
                     backend: str = "auto"):
    """-> (loss 0-d, metrics dict, logp [N] fp32 detached).

    hidden: [N, H] completion positions only, weight: [V, H], targets: [N]; the other tensors are
    flat [N] (with seq_index [N], num_seqs B and num_tokens) as in grpo_loss; advantages [B] or
    [N]. exclude_ids: [k] token ids the sampler never draws; log-probs are renormalised without
    them (see linear_logprob). backend: 'auto' (Triton on CUDA, torch on CPU), 'triton' or 'torch',
    resolved once for both ops.
    """
    backend = resolve_backend(backend, hidden, weight)
    logp, entropy = linear_logprob(hidden, weight, targets, temperature, return_entropy=True,
                                   exclude_ids=exclude_ids, chunk_rows=chunk_rows,
                                   backend=backend)  # (N,), (N,)
    loss, metrics = grpo_loss(logp, advantages, mask, old_logp=old_logp, ref_logp=ref_logp,
                              rollout_logp=rollout_logp, entropy=entropy, seq_index=seq_index,
                              num_seqs=num_seqs, num_tokens=num_tokens, params=params, backend=backend)
    return loss, metrics, logp.detach()


def linear_grpo_loss_reference(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                               advantages: torch.Tensor, mask: torch.Tensor | None = None, *,
                               old_logp=None, ref_logp=None, rollout_logp=None, seq_index=None,
                               num_seqs=None, num_tokens=None, temperature: float = 1.0,
                               params: GRPOLossParams = GRPOLossParams(),
                               exclude_ids: torch.Tensor | None = None,
                               chunk_rows: int | None = None, backend: str = "auto"):
    """The composition of the float64 references (small inputs only)."""
    logp, entropy = linear_logprob_reference(hidden, weight, targets, temperature, return_entropy=True,
                                             exclude_ids=exclude_ids)
    loss, metrics = grpo_loss_reference(logp, advantages, mask, old_logp=old_logp, ref_logp=ref_logp,
                                        rollout_logp=rollout_logp, entropy=entropy,
                                        seq_index=seq_index, num_seqs=num_seqs,
                                        num_tokens=num_tokens, params=params)
    return loss, metrics, logp.detach()
