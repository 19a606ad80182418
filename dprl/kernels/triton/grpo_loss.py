"""Triton kernel for the GRPO token loss: one pass over per-token log-probs gives the weighted loss,
its gradient with respect to logp, and the metric sums. The gradient is closed form (see
dprl/kernels/grpo_loss.py), so the backward is a scale of what this pass wrote.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

# Per-token work is a few flops on 5-8 fp32 loads; 1024 tokens per program is bandwidth-bound
# already and keeps the partial-sum buffer tiny (16 rows for 16k tokens).
BLOCK_T = 1024


@triton.jit
def _grpo_loss_kernel(
    logp_ptr,  # (N,) fp32 trainer log-probs
    old_ptr,  # (N,) fp32 log-probs of the policy that sampled (if HAS_OLD)
    ref_ptr,  # (N,) fp32 reference-model log-probs (if HAS_REF)
    roll_ptr,  # (N,) fp32 rollout-engine log-probs (if HAS_TIS)
    adv_ptr,  # (N,) fp32 per-token advantage
    w_ptr,  # (N,) fp32 aggregation weight (0 on masked tokens)
    mask_ptr,  # (N,) fp32 0/1
    ent_ptr,  # (N,) fp32 entropy (if HAS_ENT)
    grad_ptr,  # (N,) fp32 out: d loss / d logp
    part_ptr,  # (num_programs, 4) fp32 out: loss, clipped tokens, kl, entropy sums
    N,
    eps_low,
    eps_high,
    beta,
    tis_cap,
    HAS_OLD: tl.constexpr,
    HAS_REF: tl.constexpr,
    HAS_TIS: tl.constexpr,
    HAS_ENT: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    ok = offs < N
    logp = tl.load(logp_ptr + offs, mask=ok, other=0.0)
    adv = tl.load(adv_ptr + offs, mask=ok, other=0.0)
    w = tl.load(w_ptr + offs, mask=ok, other=0.0)
    m = tl.load(mask_ptr + offs, mask=ok, other=0.0)
    if HAS_OLD:
        ratio = tl.exp(logp - tl.load(old_ptr + offs, mask=ok, other=0.0))
    else:
        ratio = tl.full((BLOCK,), 1.0, tl.float32)
    clipped = ((ratio < 1.0 - eps_low) & (adv < 0.0)) | ((ratio > 1.0 + eps_high) & (adv > 0.0))
    clamped = tl.minimum(tl.maximum(ratio, 1.0 - eps_low), 1.0 + eps_high)
    loss = -tl.minimum(ratio * adv, clamped * adv)
    dloss = tl.where(clipped, 0.0, -adv * ratio)
    if HAS_TIS:
        # Truncated importance weight pi_old / pi_rollout, capped (Yao et al. 2025, "Your
        # efficient RL framework secretly brings you off-policy RL training").
        old = tl.load(old_ptr + offs, mask=ok, other=0.0) if HAS_OLD else logp
        iw = tl.minimum(tl.exp(old - tl.load(roll_ptr + offs, mask=ok, other=0.0)), tis_cap)
        loss = loss * iw
        dloss = dloss * iw
    kl = tl.zeros((BLOCK,), tl.float32)
    if HAS_REF:
        d = tl.load(ref_ptr + offs, mask=ok, other=0.0) - logp
        ed = tl.exp(d)
        kl = ed - d - 1.0  # k3 (Schulman 2020, "Approximating KL divergence")
        loss = loss + beta * kl
        dloss = dloss + beta * (1.0 - ed)
    tl.store(grad_ptr + offs, dloss * w, mask=ok)
    tl.store(part_ptr + pid * 4 + 0, tl.sum(loss * w, axis=0))
    tl.store(part_ptr + pid * 4 + 1, tl.sum(tl.where(clipped, m, 0.0), axis=0))
    tl.store(part_ptr + pid * 4 + 2, tl.sum(kl * m, axis=0))
    if HAS_ENT:
        tl.store(part_ptr + pid * 4 + 3, tl.sum(tl.load(ent_ptr + offs, mask=ok, other=0.0) * m, axis=0))
    else:
        tl.store(part_ptr + pid * 4 + 3, 0.0)


def grpo_token_terms(logp, old, ref, roll, adv, weight, mask, entropy, params):
    """All [N] fp32 contiguous (old/ref/roll/entropy may be None) -> (grad [N], sums [4]):
    sums = (weighted loss, clipped masked tokens, masked kl sum, masked entropy sum)."""
    n = logp.shape[0]
    for name, t in (("logp", logp), ("advantages", adv), ("weight", weight), ("mask", mask),
                    ("old_logp", old), ("ref_logp", ref), ("rollout_logp", roll), ("entropy", entropy)):
        if t is not None and (t.shape != (n,) or t.dtype != torch.float32 or not t.is_contiguous()
                              or t.device != logp.device):
            raise ValueError(f"{name} must be a contiguous fp32 [N] tensor on {logp.device}")
    grad = torch.empty_like(logp)  # (N,)
    progs = max(1, triton.cdiv(n, BLOCK_T))
    part = torch.zeros(progs, 4, dtype=torch.float32, device=logp.device)  # (P, 4)
    if n:
        _grpo_loss_kernel[(progs,)](
            logp, old if old is not None else logp, ref if ref is not None else logp,
            roll if roll is not None else logp, adv, weight, mask,
            entropy if entropy is not None else logp, grad, part, n,
            float(params.eps_low), float(params.eps_high), float(params.beta),
            float(params.tis_cap or 0.0), HAS_OLD=old is not None, HAS_REF=ref is not None,
            HAS_TIS=roll is not None, HAS_ENT=entropy is not None, BLOCK=BLOCK_T)
    return grad, part.sum(0)  # (N,), (4,)
