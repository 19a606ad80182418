"""The CPU path of `linear_logprob` tiled over the vocabulary instead of the tokens.

Tiling tokens (the GPU layout) streams the whole lm_head weight [V, H] once per token chunk and
adds every chunk's weight gradient into a [V, H] accumulator. On a CPU with few tokens per chunk
(8M fp32 elements / 151,936 = 55 tokens) that is dozens of passes over a 155 MB weight and its
gradient. Tiling the vocabulary turns it around: every row keeps an online log-sum-exp across the
vocabulary blocks, the weight and its gradient are each touched once per pass, and what is re-read
per block is the hidden states [N, H], which stay in cache when N is small. `linear_logprob` picks
whichever layout streams fewer bytes (`vocab_tiles_stream_less`).

Memory: one [N, Vb] fp32 logits block (Vb * N <= the CPU chunk budget) plus an [N, H] fp32
hidden-gradient accumulator; nothing scales with N x V.
"""
from __future__ import annotations

import math

import torch

from dprl.kernels._common import rows_per_chunk


def vocab_block(n: int, v: int, chunk_elems: int) -> int:
    """Vocabulary entries per block so that an [n, block] fp32 block holds <= chunk_elems."""
    return rows_per_chunk(v, n, chunk_elems)  # the block's columns are the tiled "rows" here


def vocab_tiles_stream_less(n: int, v: int, h: int, chunk_elems: int) -> bool:
    """True when tiling the vocabulary reads fewer bytes than tiling the tokens: token tiles read
    the [V, H] weight once per chunk of chunk_elems // V rows; vocabulary tiles read the [N, H]
    hidden states once per block of chunk_elems // N entries."""
    rows = rows_per_chunk(n, v, chunk_elems)
    by_rows = math.ceil(n / rows) * v * h
    by_vocab = math.ceil(v / vocab_block(n, v, chunk_elems)) * n * h
    return by_vocab < by_rows


def _block_logits(hidden: torch.Tensor, w_block: torch.Tensor, inv_t: float) -> torch.Tensor:
    """(N, H) x (Vb, H) -> fp32 (N, Vb) logits / temperature, a fresh buffer the caller owns."""
    z = hidden @ w_block.T  # (N, Vb) in the weights' dtype
    z = z if z.dtype == torch.float32 else z.float()
    return z.mul_(inv_t)


def forward(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, inv_t: float,
            with_entropy: bool, block: int):
    """-> logp, lse, entropy (None unless with_entropy): fp32 [N] each.

    Online over vocabulary blocks, per row: m the running max, s = sum exp(z - m) and
    t = sum exp(z - m) * (z - m) (the shifted form the row kernels use, so the entropy
    log s - t / s does not cancel large logits). A new max m' rescales s and t by exp(m - m'),
    and t also gains (m - m') * s from the shift.
    """
    n, v = hidden.shape[0], weight.shape[0]
    tgt = targets.long()  # (N,)
    if n and (int(tgt.min()) < 0 or int(tgt.max()) >= v):  # a block would silently skip it
        raise ValueError(f"targets must be token ids in [0, {v}), got {int(tgt.min())}..{int(tgt.max())}")
    picked = torch.zeros(n, dtype=torch.float32)  # (N,) target logit / temperature
    m = s = t = None
    for v0 in range(0, v, block):
        v1 = min(v, v0 + block)
        z = _block_logits(hidden, weight[v0:v1], inv_t)  # (N, Vb)
        inside = (tgt >= v0) & (tgt < v1)  # (N,)
        col = (tgt - v0).clamp_(0, v1 - v0 - 1)  # (N,)
        picked = torch.where(inside, z.gather(1, col[:, None]).squeeze(1), picked)
        bm = z.amax(dim=1)  # (N,)
        m_new = bm if m is None else torch.maximum(m, bm)  # (N,)
        z.sub_(m_new[:, None])  # (N, Vb) shifted, <= 0
        e = torch.exp(z)  # (N, Vb)
        bs = e.sum(dim=1)  # (N,)
        bt = e.mul_(z).sum(dim=1) if with_entropy else None  # (N,)
        if m is None:
            s, t = bs, bt
        else:
            alpha = torch.exp(m - m_new)  # (N,) <= 1
            if with_entropy:
                t = alpha * (t + (m - m_new) * s) + bt
            s = alpha * s + bs
        m = m_new
        del z, e
    log_s = s.log()  # (N,)
    lse = m + log_s  # (N,)
    logp = picked - lse  # (N,)
    entropy = log_s - t / s if with_entropy else None
    return logp, lse, entropy


def backward(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, lse: torch.Tensor,
             grad: torch.Tensor, inv_t: float, block: int, need_h: bool, need_w: bool):
    """-> grad_hidden [N, H], grad_weight [V, H] (None where not needed), in the inputs' dtypes.

    Per block: recompute the logits, d logits = grad * inv_t * (onehot - softmax), then
    grad_hidden += d @ W_block (fp32 accumulator, one rounding at the end) and
    grad_weight[block] = d.T @ hidden, written once.
    """
    n, v = hidden.shape[0], weight.shape[0]
    tgt = targets.long()  # (N,)
    scale = grad.float() * inv_t  # (N,)
    rows = torch.arange(n)  # (N,)
    h32 = hidden if hidden.dtype == torch.float32 else hidden.float()  # (N, H)
    grad_h = torch.zeros(hidden.shape, dtype=torch.float32) if need_h else None  # (N, H)
    grad_w = torch.empty_like(weight) if need_w else None  # (V, H)
    for v0 in range(0, v, block):
        v1 = min(v, v0 + block)
        w = weight[v0:v1]  # (Vb, H)
        d = _block_logits(hidden, w, inv_t)  # (N, Vb) -> d logits in place
        d.sub_(lse[:, None]).exp_().mul_(-scale[:, None])  # (N, Vb) -grad * inv_t * softmax
        inside = (tgt >= v0) & (tgt < v1)  # (N,)
        d.index_put_((rows[inside], tgt[inside] - v0), scale[inside], accumulate=True)
        if need_h:
            grad_h.addmm_(d, w if w.dtype == torch.float32 else w.float())  # (N, H)
        if need_w:
            grad_w[v0:v1] = d.T @ h32  # (Vb, H)
        del d
    if need_h and grad_h.dtype != hidden.dtype:
        grad_h = grad_h.to(hidden.dtype)
    return grad_h, grad_w
