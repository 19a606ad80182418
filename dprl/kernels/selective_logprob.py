"""log p(target) per row from [N, V] logits, without a full-vocabulary log-softmax.

`selective_logprob` is the public op: Triton on CUDA, chunked torch on CPU. Both read the logits
once forward and recompute the softmax once backward; neither keeps more than a row block of fp32
temporaries. `selective_logprob_reference` is the float64 definition it is tested against.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dprl.kernels import _common
from dprl.kernels._common import (check_float, check_targets, check_temperature, implementation,
                                  resolve_backend, rows_per_chunk)


@dataclass(frozen=True)
class LogprobParams:
    """What the autograd functions need besides tensors."""

    temperature: float = 1.0
    with_entropy: bool = False
    inplace_backward: bool = False  # write d logits into the logits buffer (it is consumed)
    backend: str = "torch"  # resolved: 'triton' or 'torch'
    chunk_elems: int = _common.CPU_CHUNK_ELEMS  # torch path: fp32 elements per row block


def _rows_per_step(n: int, v: int, params: LogprobParams) -> int:
    """Triton streams whole rows in one launch; the torch path bounds its temporaries by rows.
    At least 1, so that zero rows make an empty loop rather than a zero range step."""
    if params.backend == "triton":
        return max(1, n)
    return rows_per_chunk(n, v, params.chunk_elems)


class SelectiveLogprob(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, params: LogprobParams):
        ops = implementation("logprob_rows", params.backend)
        n, v = logits.shape
        inv_t = 1.0 / params.temperature
        step = _rows_per_step(n, v, params)
        logp = torch.empty(n, dtype=torch.float32, device=logits.device)  # (N,)
        lse = torch.empty(n, dtype=torch.float32, device=logits.device)  # (N,)
        ent = torch.empty(n, dtype=torch.float32, device=logits.device) if params.with_entropy else None
        for a in range(0, n, step):
            lp, ls, en = ops.rows_forward(logits[a:a + step], targets[a:a + step], inv_t,
                                          params.with_entropy)  # (n,) each
            logp[a:a + step], lse[a:a + step] = lp, ls
            if ent is not None:
                ent[a:a + step] = en
        ctx.save_for_backward(logits, targets, lse)
        ctx.params = params
        if ent is not None:
            ctx.mark_non_differentiable(ent)
            return logp, ent
        return logp

    @staticmethod
    def backward(ctx, grad_logp: torch.Tensor, *_):
        logits, targets, lse = ctx.saved_tensors
        params = ctx.params
        ops = implementation("logprob_rows", params.backend)
        n, v = logits.shape
        out = logits if params.inplace_backward else torch.empty_like(logits)  # (N, V)
        step = _rows_per_step(n, v, params)
        for a in range(0, n, step):
            ops.rows_backward_(logits[a:a + step], targets[a:a + step], lse[a:a + step],
                               grad_logp[a:a + step], 1.0 / params.temperature, out[a:a + step])
        return out, None, None


def _check(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> None:
    if logits.dim() != 2:
        raise ValueError(f"logits must be [N, V], got shape {tuple(logits.shape)}")
    check_float("logits", logits)
    check_targets(targets, logits.shape[0], logits.device)
    check_temperature(temperature)


def selective_logprob(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0, *,
                      return_entropy: bool = False, inplace_backward: bool = False,
                      backend: str = "auto"):
    """fp32 log softmax(logits / temperature)[i, targets[i]] -> [N].

    logits: [N, V] fp32/bf16/fp16 (unit stride over V); targets: [N] int32/int64.
    return_entropy: also return the fp32 [N] entropy of softmax(logits / temperature), a metric
    without gradient. inplace_backward: the gradient is written into the logits buffer, which
    must not be read again (saves N x V of memory in the backward).
    backend: 'auto' (Triton on CUDA, chunked torch on CPU), 'triton' or 'torch'.
    Differentiable with respect to `logits`.
    """
    _check(logits, targets, temperature)
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    params = LogprobParams(temperature=float(temperature), with_entropy=return_entropy,
                           inplace_backward=inplace_backward,
                           backend=resolve_backend(backend, logits),
                           chunk_elems=_common.CPU_CHUNK_ELEMS)
    return SelectiveLogprob.apply(logits, targets, params)


def selective_logprob_reference(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                                *, return_entropy: bool = False, inplace_backward: bool = False,
                                backend: str = "auto"):
    """The definition in float64 through autograd (builds N x V: small inputs only) -> fp32 [N].
    `inplace_backward` and `backend` are accepted for signature parity and ignored."""
    _check(logits, targets, temperature)
    logq = torch.log_softmax(logits.double() / temperature, dim=-1)  # (N, V) float64
    logp = logq.gather(1, targets.long()[:, None]).squeeze(1).float()  # (N,)
    if not return_entropy:
        return logp
    entropy = -(logq.exp() * logq.nan_to_num(neginf=0.0)).sum(-1).float().detach()  # (N,)
    return logp, entropy
