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

from dprl.kernels import GRPOLossParams, linear_grpo_loss, linear_logprob
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


def completion_hidden(model, batch: PolicyBatch) -> torch.Tensor:
    """Hidden states that predict the completion tokens -> (N, H)."""
    hf = unwrap(model)
    inputs = batch.model_inputs
    if "group_layout" in inputs:  # packed groups: the attention takes the layout, not a mask
        text = getattr(hf.config, "text_config", hf.config)
        inputs = {**inputs, "attention_mask": {t: None for t in set(getattr(text, "layer_types", None)
                                                                     or ["full_attention"])}}
    out = hf.model(**inputs, use_cache=False)
    h = out.last_hidden_state  # (S, L, H)
    return h.reshape(-1, h.shape[-1]).index_select(0, batch.positions)  # (N, H)


def token_logprobs(model, batch: PolicyBatch, temperature: float = 1.0,
                   banned: torch.Tensor | None = None) -> torch.Tensor:
    """fp32 log p(token) of every completion token -> (N,), renormalised without the `banned`
    token ids (the sampler never draws them, so its distribution is softmax over the rest)."""
    install_fused_head(model)
    hidden = completion_hidden(model, batch)  # (N, H)

    def fused(h, w):
        return linear_logprob(h, w, batch.targets, temperature, exclude_ids=banned)  # (N,)

    return unwrap(model).lm_head(hidden, fused=fused)


def grpo_policy_loss(model, batch: PolicyBatch, advantages: torch.Tensor, *, old_logp=None,
                     ref_logp=None, rollout_logp=None, temperature: float = 1.0,
                     params: GRPOLossParams = GRPOLossParams(), num_seqs: int | None = None,
                     num_tokens: int | None = None, banned: torch.Tensor | None = None):
    """GRPO loss of a micro-batch -> (loss 0-d, metrics dict, logp (N,) detached).

    advantages: (S,) per sequence of this batch. old/ref/rollout log-probs: (N,) per token or None.
    num_seqs / num_tokens: the whole batch's sequences and tokens when this is one micro-batch
    of it (the loss is then its share of the batch's loss); default: this micro-batch's own.
    banned: token ids the sampler never draws (linear_grpo_loss's exclude_ids).
    """
    install_fused_head(model)
    hidden = completion_hidden(model, batch)  # (N, H)

    def fused(h, w):
        per_token = advantages[batch.seq_index]  # (N,): num_seqs may count more than this batch's
        return linear_grpo_loss(h, w, batch.targets, per_token, old_logp=old_logp, ref_logp=ref_logp,
                                rollout_logp=rollout_logp, seq_index=batch.seq_index,
                                num_seqs=num_seqs or batch.num_seqs, num_tokens=num_tokens,
                                temperature=temperature, params=params, exclude_ids=banned)

    return unwrap(model).lm_head(hidden, fused=fused)
