"""The GRPO token loss over per-token log-probs: clipped surrogate, k3 KL to a reference,
optional truncated importance weights, masks and the aggregation modes, plus the step metrics,
all from one pass.

Per token, with ratio r = exp(logp - old_logp) and advantage A:
    loss_t = -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A) * iw + beta * (exp(ref - logp) - (ref - logp) - 1)
    iw = min(exp(old_logp - rollout_logp), tis_cap)   (only when rollout_logp is given)
d loss_t / d logp is closed form: -A r iw outside the clipped region, 0 inside it, plus
beta (1 - exp(ref - logp)); so the forward writes the gradient and the backward only scales it.
Aggregation weights w_t turn token losses into the scalar loss = sum_t w_t loss_t:
    'seq_mean'   (GRPO, DeepPerception): mask_t / (max(tokens in seq, 1) * B)
    'token_mean' (DAPO): mask_t / max(masked tokens, 1)   (num_tokens: the whole batch's count)
    'dr_grpo'    (Dr. GRPO, Liu et al. 2025): mask_t / (B * max_completion_length)
Metrics are means over unmasked tokens: clip fraction, k3 KL, entropy (if given).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dprl.config.train import GRPOAlgoConfig, check_grpo_loss
from dprl.kernels._common import implementation, resolve_backend

METRICS = ("clip_fraction", "kl", "entropy")


@dataclass(frozen=True)
class GRPOLossParams:
    """Defaults are DeepPerception's: beta 0.04 (k3), per-sequence token mean then batch mean.
    A training run builds these from its `grpo:` section with `from_config`."""

    eps_low: float = 0.2
    eps_high: float = 0.2
    beta: float = 0.04
    tis_cap: float | None = None  # cap C of the truncated importance weight; needs rollout_logp
    aggregation: str = "seq_mean"
    max_completion_length: int | None = None  # Dr. GRPO's constant L

    def __post_init__(self):
        check_grpo_loss("GRPOLossParams.", eps_low=self.eps_low, eps_high=self.eps_high, beta=self.beta,
                        tis_cap=self.tis_cap or 0.0, aggregation=self.aggregation)
        if self.aggregation == "dr_grpo" and not (self.max_completion_length or 0) > 0:
            raise ValueError("aggregation='dr_grpo' needs max_completion_length > 0")

    @classmethod
    def from_config(cls, algo: GRPOAlgoConfig, max_completion_length: int) -> GRPOLossParams:
        """The loss a `grpo:` config section describes; `max_completion_length` is the rollout's
        max_tokens (Dr. GRPO's constant L)."""
        return cls(eps_low=algo.eps_low, eps_high=algo.eps_high, beta=algo.beta,
                   tis_cap=algo.tis_cap or None, aggregation=algo.aggregation,
                   max_completion_length=max_completion_length)


def torch_token_terms(logp, old, ref, roll, adv, weight, mask, entropy, params: GRPOLossParams):
    """Torch twin of triton/grpo_loss.grpo_token_terms: [N] fp32 -> (grad [N], sums [4])."""
    ratio = torch.exp(logp - old) if old is not None else torch.ones_like(logp)  # (N,)
    clipped = ((ratio < 1 - params.eps_low) & (adv < 0)) | ((ratio > 1 + params.eps_high) & (adv > 0))  # (N,)
    clamped = ratio.clamp(1 - params.eps_low, 1 + params.eps_high)  # (N,)
    loss = -torch.minimum(ratio * adv, clamped * adv)  # (N,)
    dloss = torch.where(clipped, 0.0, -adv * ratio)  # (N,)
    if roll is not None:
        iw = torch.exp((old if old is not None else logp) - roll).clamp(max=params.tis_cap)  # (N,)
        loss, dloss = loss * iw, dloss * iw
    kl = torch.zeros_like(logp)  # (N,)
    if ref is not None:
        d = ref - logp  # (N,)
        ed = torch.exp(d)  # (N,)
        kl = ed - d - 1
        loss = loss + params.beta * kl
        dloss = dloss + params.beta * (1 - ed)
    ent_sum = (entropy * mask).sum() if entropy is not None else logp.new_zeros(())
    sums = torch.stack([(loss * weight).sum(), (clipped * mask).sum(), (kl * mask).sum(), ent_sum])  # (4,)
    return dloss * weight, sums


class GRPOLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logp, old, ref, roll, adv, weight, mask, entropy, params_backend):
        params, backend = params_backend
        token_terms = implementation("grpo_token_terms", backend)
        grad, sums = token_terms(logp, old, ref, roll, adv, weight, mask, entropy, params)
        ctx.save_for_backward(grad)
        return sums[0], sums[1:]

    @staticmethod
    def backward(ctx, grad_loss, _):
        (grad,) = ctx.saved_tensors
        return grad * grad_loss, None, None, None, None, None, None, None, None


def _layout(logp, advantages, mask, seq_index, num_seqs):
    """Flattens the inputs: [B, T] rows are sequences, or flat [N] tokens with seq_index [N] and
    num_seqs. -> logp [N], per-token advantages [N], mask [N] fp32, seq [N] int64, B."""
    if logp.dim() == 2 and seq_index is None:
        b, t = logp.shape
        seq = torch.arange(b, device=logp.device).repeat_interleave(t)  # (N,)
    elif logp.dim() == 1 and seq_index is not None:
        if num_seqs is None:
            raise ValueError("flat inputs with seq_index need num_seqs")
        b, seq = int(num_seqs), seq_index.long().reshape(-1)  # (N,)
        if seq.shape != logp.shape:
            raise ValueError(f"seq_index must be [N] = {tuple(logp.shape)}, got {tuple(seq_index.shape)}")
    else:
        raise ValueError("logp must be [B, T] (without seq_index) or [N] with seq_index and num_seqs")
    flat = logp.reshape(-1)  # (N,)
    # fp32 whatever logp's dtype: the aggregation weights are accumulated in fp32 (index_add_).
    m = torch.ones_like(flat, dtype=torch.float32) if mask is None else mask.reshape(-1).to(torch.float32)  # (N,)
    if m.shape != flat.shape:
        raise ValueError(f"mask must match logp's shape {tuple(logp.shape)}")
    # Shaped like logp: per token (this wins when a flat batch has N == B); else [B] per sequence.
    if advantages.shape == logp.shape:
        adv = advantages.reshape(-1).to(torch.float32)  # (N,)
    elif advantages.shape == (b,):
        adv = advantages.to(torch.float32)[seq]  # (N,)
    else:
        raise ValueError(f"advantages must be [B] = [{b}] or shaped like logp {tuple(logp.shape)}")
    return flat, adv, m, seq, b


def _weights(mask, seq, b, params: GRPOLossParams, num_tokens=None):
    """Aggregation weight per token [N] fp32 (zero where masked)."""
    if params.aggregation == "seq_mean":
        count = torch.zeros(b, dtype=torch.float32, device=mask.device).index_add_(0, seq, mask)  # (B,)
        return mask / (count.clamp(min=1.0)[seq] * b)  # (N,)
    if params.aggregation == "token_mean":
        return mask / (mask.sum().clamp(min=1.0) if num_tokens is None else max(float(num_tokens), 1.0))  # (N,)
    return mask / (b * params.max_completion_length)  # (N,)


def _f32(t):
    return None if t is None else t.reshape(-1).to(torch.float32).contiguous()


def grpo_loss(logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor | None = None, *,
              old_logp=None, ref_logp=None, rollout_logp=None, entropy=None, seq_index=None,
              num_seqs=None, num_tokens=None, params: GRPOLossParams = GRPOLossParams(),
              backend: str = "auto"):
    """GRPO loss and step metrics in one pass -> (loss: 0-d fp32, metrics: dict of 0-d tensors).

    logp: [B, T] (rows are sequences) or [N] flat tokens with seq_index [N] int and num_seqs B;
    differentiable. advantages: [B] per sequence or shaped like logp. mask: like logp (1 = token
    counts), None = all. old_logp (None: on-policy, ratio 1), ref_logp (None: no KL term),
    rollout_logp (with params.tis_cap: truncated importance weights), entropy: like logp, no grad.
    metrics: clip_fraction, kl (k3 mean), entropy (mean; 0 without entropy), over unmasked tokens.
    num_seqs / num_tokens: the sequences (B) and unmasked tokens of the whole batch when this
    call is one micro-batch of it, so that the micro-batches' losses add up to the batch's (the
    gradient then does not depend on the split); default: this call's own.
    backend: 'auto' (Triton on CUDA, torch on CPU), 'triton' or 'torch'.
    """
    if rollout_logp is not None and params.tis_cap is None:
        raise ValueError("rollout_logp given without params.tis_cap")
    flat, adv, m, seq, b = _layout(logp, advantages, mask, seq_index, num_seqs)
    backend = resolve_backend(backend, flat)
    weight = _weights(m, seq, b, params, num_tokens)  # (N,)
    old = _f32(old_logp)
    loss, sums = GRPOLoss.apply(flat.to(torch.float32).contiguous(), old, _f32(ref_logp),
                                _f32(rollout_logp) if params.tis_cap is not None else None,
                                adv.contiguous(), weight, m.contiguous(), _f32(entropy),
                                (params, backend))
    count = m.sum().clamp(min=1.0)
    sums = sums.detach()
    return loss, dict(zip(METRICS, (sums[0] / count, sums[1] / count, sums[2] / count)))


def grpo_loss_reference(logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor | None = None, *,
                        old_logp=None, ref_logp=None, rollout_logp=None, entropy=None, seq_index=None,
                        num_seqs=None, num_tokens=None, params: GRPOLossParams = GRPOLossParams(),
                        backend: str = "auto"):
    """The textbook formulation (TRL-style torch.min/clamp, autograd gradient) in float64.
    `backend` is accepted for signature parity and ignored."""
    if rollout_logp is not None and params.tis_cap is None:
        raise ValueError("rollout_logp given without params.tis_cap")
    flat, adv, m, seq, b = _layout(logp, advantages, mask, seq_index, num_seqs)
    lp, adv, m = flat.double(), adv.double(), m.double()  # (N,)
    old = lp.detach() if old_logp is None else old_logp.reshape(-1).double()  # (N,)
    ratio = torch.exp(lp - old)  # (N,)
    per_tok = -torch.min(ratio * adv, torch.clamp(ratio, 1 - params.eps_low, 1 + params.eps_high) * adv)
    if rollout_logp is not None:
        per_tok = per_tok * torch.clamp(torch.exp(old - rollout_logp.reshape(-1).double()), max=params.tis_cap)
    kl = torch.zeros_like(lp)
    if ref_logp is not None:
        ref = ref_logp.reshape(-1).double()  # (N,)
        kl = torch.exp(ref - lp) - (ref - lp) - 1  # (N,)
        per_tok = per_tok + params.beta * kl
    if params.aggregation == "seq_mean":
        tok_sum = torch.zeros(b, dtype=torch.float64, device=lp.device).index_add(0, seq, per_tok * m)  # (B,)
        count = torch.zeros(b, dtype=torch.float64, device=lp.device).index_add(0, seq, m)  # (B,)
        loss = (tok_sum / count.clamp(min=1)).mean()
    elif params.aggregation == "token_mean":
        loss = (per_tok * m).sum() / (m.sum().clamp(min=1) if num_tokens is None else max(float(num_tokens), 1.0))
    else:
        loss = (per_tok * m).sum() / (b * params.max_completion_length)
    low = (ratio < 1 - params.eps_low) & (adv < 0)  # (N,)
    high = (ratio > 1 + params.eps_high) & (adv > 0)  # (N,)
    count = m.sum().clamp(min=1)
    ent = (entropy.reshape(-1).double() * m).sum() / count if entropy is not None else torch.zeros((), dtype=torch.float64)
    metrics = {"clip_fraction": ((low | high).double() * m).sum() / count,
               "kl": (kl.detach() * m).sum() / count, "entropy": ent}
    return loss.float(), {k: v.float() for k, v in metrics.items()}
