"""Torch row-block ops behind the CPU paths: the same contract as triton/logprob_rows.py.

`rows_forward` turns a block of logits into (logp, lse, entropy) per row; `rows_backward_`
writes d logp / d logits, scaled by the upstream gradient, into a buffer. Callers hand in row
blocks sized by `_common.CPU_CHUNK_ELEMS`, so the temporaries here are bounded by that.
"""
from __future__ import annotations

import torch


def rows_forward(x: torch.Tensor, targets: torch.Tensor, inv_t: float, with_entropy: bool,
                 consume: bool = False):
    """x: [n, V] logits (any float dtype); targets: [n] int -> logp, lse, entropy: [n] fp32 each.

    lse is the log-sum-exp of x * inv_t, kept for the backward. With `consume`, an fp32 `x` is
    overwritten (the linear path's logits block is scratch), saving one n x V temporary.
    """
    z = x if (consume and x.dtype == torch.float32) else x.to(torch.float32, copy=True)  # (n, V)
    z.mul_(inv_t)
    m = z.amax(dim=1, keepdim=True)  # (n, 1)
    z.sub_(m)  # (n, V) shifted, <= 0
    picked = z.gather(1, targets.long()[:, None]).squeeze(1)  # (n,)
    e = torch.exp(z)  # (n, V)
    s = e.sum(dim=1)  # (n,)
    log_s = s.log()  # (n,)
    logp = picked - log_s  # (n,)
    lse = log_s + m.squeeze(1)  # (n,)
    if with_entropy:
        # H = log s - sum(e * z) / s on the shifted logits; e = 0 where z = -inf (masked tokens).
        ez = e.mul_(z).nan_to_num_(nan=0.0).sum(dim=1)  # (n,)
        entropy = log_s - ez / s  # (n,)
    else:
        entropy = None
    return logp, lse, entropy


def rows_backward_(x: torch.Tensor, targets: torch.Tensor, lse: torch.Tensor, grad: torch.Tensor,
                   inv_t: float, out: torch.Tensor) -> torch.Tensor:
    """out[i, :] = grad[i] * inv_t * (onehot(targets[i]) - softmax(x[i] * inv_t)).

    x: [n, V]; targets, lse, grad: [n]; out: [n, V] (may be x itself for the in-place backward).
    An fp32 `out` is used as the workspace, so no n x V temporary is made in that case.
    """
    work = out if out.dtype == torch.float32 else torch.empty(x.shape, dtype=torch.float32,
                                                              device=x.device)  # (n, V)
    torch.mul(x, inv_t, out=work) if x.dtype == torch.float32 else work.copy_(x).mul_(inv_t)
    work.sub_(lse[:, None]).exp_()  # (n, V) softmax
    scale = grad.float() * inv_t  # (n,)
    work.mul_(-scale[:, None])  # (n, V)
    rows = torch.arange(x.shape[0], device=x.device)  # (n,)
    work.index_put_((rows, targets.long()), scale, accumulate=True)
    if work is not out:
        out.copy_(work)
    return out
