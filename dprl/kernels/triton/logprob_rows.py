"""Triton row kernels for log p(target), log-sum-exp and entropy over a vocabulary, and their
backward. One program per row streams the row in BLOCK_V pieces with an online max / sum
(Milakov & Gimelshein 2018, "Online normalizer calculation for softmax"), so a row is read once
forward and once backward whatever V is: the HBM floor for fp32 [N] outputs from [N, V] logits.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

# 4096 bf16 = 8 KB per load keeps enough bytes in flight per program on H100 for a streaming
# kernel; V = 151,936 is then 38 iterations per row. Not autotuned: the interpreter used in CI
# fails with more than one config.
BLOCK_V = 4096
NUM_WARPS = 16


@triton.jit
def _rows_fwd_kernel(
    x_ptr,  # (N, V) logits, fp32/bf16/fp16, rows stride_xn apart
    tgt_ptr,  # (N,) int32/int64
    logp_ptr,  # (N,) fp32 out
    lse_ptr,  # (N,) fp32 out
    ent_ptr,  # (N,) fp32 out (untouched unless WITH_ENTROPY)
    stride_xn,
    V,
    inv_t,
    WITH_ENTROPY: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    base = x_ptr + row * stride_xn
    offs = tl.arange(0, BLOCK)
    m = tl.full((), float("-inf"), tl.float32)  # running max
    s = tl.zeros((), tl.float32)  # running sum of exp(z - m)
    t = tl.zeros((), tl.float32)  # running sum of exp(z - m) * z
    for start in range(0, V, BLOCK):
        cols = start + offs
        z = tl.load(base + cols, mask=cols < V, other=float("-inf")).to(tl.float32) * inv_t
        m_new = tl.maximum(m, tl.max(z, axis=0))
        # Guards keep rows that start with -inf (masked vocabulary entries) free of NaN.
        alpha = tl.where(m_new == float("-inf"), 1.0, tl.exp(m - m_new))
        e = tl.where(z == float("-inf"), 0.0, tl.exp(z - m_new))
        s = s * alpha + tl.sum(e, axis=0)
        if WITH_ENTROPY:
            # e = 0 where z = -inf; zero z there too so 0 * -inf never makes a NaN.
            t = t * alpha + tl.sum(e * tl.where(z == float("-inf"), 0.0, z), axis=0)
        m = m_new
    lse = m + tl.log(s)
    tgt = tl.load(tgt_ptr + row).to(tl.int64)
    zt = tl.load(base + tgt).to(tl.float32) * inv_t
    tl.store(logp_ptr + row, zt - lse)
    tl.store(lse_ptr + row, lse)
    if WITH_ENTROPY:
        tl.store(ent_ptr + row, lse - t / s)


@triton.jit
def _rows_bwd_kernel(
    x_ptr,  # (N, V) logits, rows stride_xn apart
    tgt_ptr,  # (N,) int
    lse_ptr,  # (N,) fp32
    g_ptr,  # (N,) fp32 upstream gradient of logp
    dx_ptr,  # (N, V) out, rows stride_dn apart; may alias x_ptr (in-place backward)
    stride_xn,
    stride_dn,
    V,
    inv_t,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    lse = tl.load(lse_ptr + row)
    scale = tl.load(g_ptr + row) * inv_t
    tgt = tl.load(tgt_ptr + row).to(tl.int64)
    for start in range(0, V, BLOCK):
        cols = start + offs
        z = tl.load(x_ptr + row * stride_xn + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
        p = tl.exp(z * inv_t - lse)
        d = tl.where(cols == tgt, scale - scale * p, -scale * p)
        tl.store(dx_ptr + row * stride_dn + cols, d.to(dx_ptr.dtype.element_ty), mask=cols < V)


def _check_rows(x: torch.Tensor, targets: torch.Tensor) -> None:
    if x.dim() != 2 or x.stride(1) != 1:
        raise ValueError(f"logits must be [N, V] with unit stride over V, got {tuple(x.shape)} "
                         f"strides {x.stride()}")
    if targets.shape != x.shape[:1] or targets.device != x.device:
        raise ValueError("targets must be [N] on the logits' device")


def rows_forward(x: torch.Tensor, targets: torch.Tensor, inv_t: float, with_entropy: bool,
                 consume: bool = False):
    """x: [n, V]; targets: [n] -> logp, lse, entropy (None unless with_entropy): [n] fp32.
    `consume` is accepted for parity with the torch rows; this kernel never writes x."""
    _check_rows(x, targets)
    n, v = x.shape
    logp = torch.empty(n, dtype=torch.float32, device=x.device)  # (n,)
    lse = torch.empty(n, dtype=torch.float32, device=x.device)  # (n,)
    ent = torch.empty(n if with_entropy else 1, dtype=torch.float32, device=x.device)  # (n,)
    if n:
        block = min(BLOCK_V, triton.next_power_of_2(v))
        _rows_fwd_kernel[(n,)](x, targets.contiguous(), logp, lse, ent, x.stride(0), v, float(inv_t),
                               WITH_ENTROPY=with_entropy, BLOCK=block, num_warps=NUM_WARPS)
    return logp, lse, (ent if with_entropy else None)


def rows_backward_(x: torch.Tensor, targets: torch.Tensor, lse: torch.Tensor, grad: torch.Tensor,
                   inv_t: float, out: torch.Tensor) -> torch.Tensor:
    """Writes grad * inv_t * (onehot(target) - softmax(x * inv_t)) into out: [n, V] (may be x)."""
    _check_rows(x, targets)
    if out.shape != x.shape or out.stride(1) != 1:
        raise ValueError("out must be [n, V] with unit stride over V")
    n, v = x.shape
    if n:
        block = min(BLOCK_V, triton.next_power_of_2(v))
        _rows_bwd_kernel[(n,)](x, targets.contiguous(), lse.contiguous(),
                               grad.float().contiguous(), out, x.stride(0), out.stride(0), v,
                               float(inv_t), BLOCK=block, num_warps=NUM_WARPS)
    return out
