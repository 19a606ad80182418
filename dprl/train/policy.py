"""Token log-probs and the GRPO loss of sampled completions under the trainer's model.

Only completion positions reach the vocabulary: the base model gives hidden states, the states
that predict completion tokens are gathered (never prompt or image positions), and the fused
kernels (dprl.kernels.linear_logprob / linear_grpo_loss) go from them and the lm_head weight
straight to log-probs, never holding N x V logits.

The lm_head weight is read inside the lm_head module's own call (its forward is extended to take
a `fused` function): under ZeRO-3 the weight is a partition outside that call, and DeepSpeed's
module hooks gather it for the forward and again for the backward.
"""
from __future__ import annotations

import types

import torch

from dprl.kernels import GRPOLossParams, grpo_loss, linear_logprob
from dprl.train.sequences import PolicyBatch


def unwrap(model):
    """The HF model inside a DeepSpeed engine (or the model itself)."""
    return getattr(model, "module", model)


def install_fused_head(model) -> None:
    """Lets `model.lm_head(hidden, fused=fn)` return fn(hidden, weight); plain calls are unchanged."""
    head = unwrap(model).lm_head
    if getattr(head, "_dprl_fused", False):
        return
    plain = head.forward

    def forward(self, hidden, fused=None):
        if fused is None:
            return plain(hidden)
        return fused(hidden, self.weight)

    head.forward = types.MethodType(forward, head)
    head._dprl_fused = True


def exclude_tokens(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                   logp: torch.Tensor, temperature: float, banned: torch.Tensor | None) -> torch.Tensor:
    """Full-vocabulary log-probs -> log-probs renormalised without the `banned` tokens.

    The rollout engine never samples vision tokens (their logits are masked), so its
    distribution is softmax over the other tokens; the trainer must score the same one or the
    importance ratio is off by log(1 - p(banned)). Needs only the k banned logits per token:
        log p'(t) = log p(t) - log(1 - sum_b p(b)),   p(b) = exp(z_b - lse),  lse = z_t - log p(t)
    hidden: (N, H), weight: (V, H), targets/logp: (N,), banned: (k,) token ids.
    """
    if banned is None or banned.numel() == 0:
        return logp
    z_t = (hidden.float() * weight.float().index_select(0, targets)).sum(-1) / temperature  # (N,)
    lse = z_t - logp  # (N,)
    z_b = hidden.float() @ weight.float().index_select(0, banned).T / temperature  # (N, k)
    p_b = torch.exp(z_b - lse[:, None]).sum(-1)  # (N,)
    return logp - torch.log1p(-p_b.clamp(max=1 - 1e-6))


def completion_hidden(model, batch: PolicyBatch) -> torch.Tensor:
    """Hidden states that predict the completion tokens -> (N, H)."""
    hf = unwrap(model)
    out = hf.model(**batch.model_inputs, use_cache=False)
    h = out.last_hidden_state  # (S, L, H)
    return h.reshape(-1, h.shape[-1]).index_select(0, batch.positions)  # (N, H)


def token_logprobs(model, batch: PolicyBatch, temperature: float = 1.0,
                   banned: torch.Tensor | None = None) -> torch.Tensor:
    """fp32 log p(token) of every completion token -> (N,), without the `banned` token ids."""
    install_fused_head(model)
    hidden = completion_hidden(model, batch)  # (N, H)

    def fused(h, w):
        logp = linear_logprob(h, w, batch.targets, temperature)  # (N,)
        return exclude_tokens(h, w, batch.targets, logp, temperature, banned)

    return unwrap(model).lm_head(hidden, fused=fused)


def grpo_policy_loss(model, batch: PolicyBatch, advantages: torch.Tensor, *, old_logp=None,
                     ref_logp=None, rollout_logp=None, temperature: float = 1.0,
                     params: GRPOLossParams = GRPOLossParams(), num_seqs: int | None = None,
                     banned: torch.Tensor | None = None):
    """GRPO loss of a micro-batch -> (loss 0-d, metrics dict, logp (N,) detached).

    advantages: (S,) per sequence. old/ref/rollout log-probs: (N,) per token or None.
    num_seqs: the sequences the loss is averaged over (default: this micro-batch's).
    banned: token ids the sampler never draws (see exclude_tokens).
    """
    install_fused_head(model)
    hidden = completion_hidden(model, batch)  # (N, H)

    def fused(h, w):
        # One vocabulary pass gives log-probs and entropy (a metric); the loss needs only [N].
        logp, entropy = linear_logprob(h, w, batch.targets, temperature, return_entropy=True)
        logp = exclude_tokens(h, w, batch.targets, logp, temperature, banned)  # (N,)
        loss, metrics = grpo_loss(logp, advantages, None, old_logp=old_logp, ref_logp=ref_logp,
                                  rollout_logp=rollout_logp, entropy=entropy,
                                  seq_index=batch.seq_index, num_seqs=num_seqs or batch.num_seqs,
                                  params=params)
        return loss, metrics, logp.detach()

    return unwrap(model).lm_head(hidden, fused=fused)
