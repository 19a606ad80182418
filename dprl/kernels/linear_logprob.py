"""log p(target) per token straight from hidden states and the lm_head weight, never holding N x V.

Tokens go through in chunks: one chunk's logits [n, V] are made by a GEMM, reduced to
(logp, lse, entropy) by the row kernels, and dropped. On CPU, when tiling the vocabulary instead
streams fewer bytes (few tokens, a big vocabulary: the usual case there), the blocks run over the
vocabulary with an online log-sum-exp (_torch_vocab_tiles). The backward recomputes each chunk's logits
(2NHV FLOPs) rather than storing them, turns them into d logits in place and feeds two GEMMs, so
the work is the 8NHV floor of issue 4 and the only N x V-sized memory is one chunk. GEMMs stay on
cuBLAS/oneDNN, the row work on the Triton (CUDA) or torch (CPU) row ops.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dprl.kernels import _common, _torch_vocab_tiles
from dprl.kernels._common import (check_float, check_targets, check_temperature, implementation,
                                  resolve_backend, rows_per_chunk)


@dataclass(frozen=True)
class LinearLogprobParams:
    temperature: float = 1.0
    with_entropy: bool = False
    backend: str = "torch"  # resolved: 'triton' or 'torch'
    chunk_rows: int = 1  # tokens per chunk
    vocab_block: int = 0  # > 0: tile the vocabulary in blocks of this size instead (torch only)


def _chunk_rows(n: int, v: int, weight: torch.Tensor, backend: str, chunk_rows: int | None) -> int:
    if chunk_rows is not None:
        return max(1, min(n, chunk_rows))
    if backend == "triton":
        return rows_per_chunk(n, v, _common.GPU_CHUNK_BYTES // weight.element_size())
    # torch: the chunk's logits plus one fp32 temporary of the same size (see _torch_rows).
    return rows_per_chunk(n, v, _common.CPU_CHUNK_ELEMS)


def _vocab_block(n: int, v: int, h: int, backend: str, chunk_rows: int | None,
                 vocab_block: int | None) -> int:
    """Vocabulary block size when the torch path should tile the vocabulary, else 0."""
    if vocab_block is not None:
        if chunk_rows is not None:
            raise ValueError("give chunk_rows (token tiles) or vocab_block (vocabulary tiles), not both")
        if backend != "torch":
            raise ValueError(f"vocab_block is for the torch backend, got backend={backend!r}")
        if vocab_block < 1:
            raise ValueError(f"vocab_block must be >= 1, got {vocab_block}")
        return min(v, vocab_block)
    if backend != "torch" or chunk_rows is not None:
        return 0
    if not _torch_vocab_tiles.vocab_tiles_stream_less(n, v, h, _common.CPU_CHUNK_ELEMS):
        return 0
    return _torch_vocab_tiles.vocab_block(n, v, _common.CPU_CHUNK_ELEMS)


class LinearLogprob(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                params: LinearLogprobParams):
        inv_t = 1.0 / params.temperature
        if params.vocab_block:
            logp, lse, ent = _torch_vocab_tiles.forward(hidden, weight, targets, inv_t,
                                                        params.with_entropy, params.vocab_block)
            return LinearLogprob._finish_forward(ctx, params, hidden, weight, targets, lse, logp, ent)
        ops = implementation("logprob_rows", params.backend)
        n, step = hidden.shape[0], params.chunk_rows
        logp = torch.empty(n, dtype=torch.float32, device=hidden.device)  # (N,)
        lse = torch.empty(n, dtype=torch.float32, device=hidden.device)  # (N,)
        ent = torch.empty(n, dtype=torch.float32, device=hidden.device) if params.with_entropy else None
        for a in range(0, n, step):
            logits = hidden[a:a + step] @ weight.T  # (n, V) in the weights' dtype
            lp, ls, en = ops.rows_forward(logits, targets[a:a + step], inv_t, params.with_entropy,
                                          consume=True)  # (n,) each
            logp[a:a + step], lse[a:a + step] = lp, ls
            if ent is not None:
                ent[a:a + step] = en
            del logits
        return LinearLogprob._finish_forward(ctx, params, hidden, weight, targets, lse, logp, ent)

    @staticmethod
    def _finish_forward(ctx, params, hidden, weight, targets, lse, logp, ent):
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.params = params
        if ent is not None:
            ctx.mark_non_differentiable(ent)
            return logp, ent
        return logp

    @staticmethod
    def backward(ctx, grad_logp: torch.Tensor, *_):
        hidden, weight, targets, lse = ctx.saved_tensors
        params = ctx.params
        ops = implementation("logprob_rows", params.backend)
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if params.vocab_block:
            grad_h, grad_w = _torch_vocab_tiles.backward(
                hidden, weight, targets, lse, grad_logp, 1.0 / params.temperature,
                params.vocab_block, need_h, need_w)
            return grad_h, grad_w, None, None
        n, step = hidden.shape[0], params.chunk_rows
        grad_h = torch.empty_like(hidden) if need_h else None  # (N, H)
        # fp32 accumulator: summing N / n chunk GEMMs into a bf16 buffer would round once per
        # chunk (~43 times at N = 16k), well above eager torch's single rounding.
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None  # (V, H)
        for a in range(0, n, step):
            h = hidden[a:a + step]  # (n, H)
            dlogits = h @ weight.T  # (n, V) recomputed logits, turned into d logits in place
            ops.rows_backward_(dlogits, targets[a:a + step], lse[a:a + step], grad_logp[a:a + step],
                               1.0 / params.temperature, out=dlogits)
            if need_h:
                torch.mm(dlogits, weight, out=grad_h[a:a + step])  # (n, H)
            if need_w:
                grad_w.addmm_(dlogits.T.float(), h.float())  # (V, H); .float() is free for fp32
            del dlogits
        if need_w and grad_w.dtype != weight.dtype:
            grad_w = grad_w.to(weight.dtype)
        return grad_h, grad_w, None, None


def _check(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float) -> None:
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden must be [N, H] and weight [V, H], got {tuple(hidden.shape)} and "
                         f"{tuple(weight.shape)}")
    check_float("hidden", hidden)
    if weight.dtype != hidden.dtype or weight.device != hidden.device:
        raise TypeError(f"hidden and weight must share dtype and device, got {hidden.dtype} on "
                        f"{hidden.device} and {weight.dtype} on {weight.device}")
    check_targets(targets, hidden.shape[0], hidden.device)
    check_temperature(temperature)


def linear_logprob(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                   temperature: float = 1.0, *, return_entropy: bool = False,
                   exclude_ids: torch.Tensor | None = None,
                   chunk_rows: int | None = None, vocab_block: int | None = None,
                   backend: str = "auto"):
    """fp32 log softmax(hidden @ weight.T / temperature)[i, targets[i]] -> [N].

    hidden: [N, H] and weight: [V, H] (lm_head), same float dtype; targets: [N] int32/int64.
    Feed completion positions only. return_entropy: also return the fp32 [N] entropy (a metric,
    no gradient, of the full distribution). exclude_ids: [k] token ids the distribution is
    renormalised without (a sampler that never draws them, e.g. vision tokens, samples from that
    renormalised softmax; the correction log(1 - p_excluded) is computed from the k excluded
    logits, so its fp32 error grows like 1e-7 / (1 - p_excluded): within the accuracy rule up
    to 76% excluded mass (tested), not when they hold nearly all of it). chunk_rows: tokens per chunk (default: 128 MB of logits on CUDA, 8M fp32
    elements on CPU; on CPU the vocabulary is tiled instead, in blocks of the same size, when that
    streams fewer bytes, unless chunk_rows is given). vocab_block: vocabulary entries per block,
    forcing vocabulary tiles on the torch backend. backend: 'auto' (Triton row kernels on CUDA, torch on CPU), 'triton', 'torch'.
    Differentiable with respect to hidden and weight; the weight gradient is accumulated in fp32.
    """
    _check(hidden, weight, targets, temperature)
    backend = resolve_backend(backend, hidden, weight)
    hidden = hidden.contiguous()  # (N, H)
    n, v = hidden.shape[0], weight.shape[0]
    params = LinearLogprobParams(
        temperature=float(temperature), with_entropy=return_entropy, backend=backend,
        chunk_rows=_chunk_rows(n, v, weight, backend, chunk_rows),
        vocab_block=_vocab_block(n, v, hidden.shape[1], backend, chunk_rows, vocab_block))
    out = LinearLogprob.apply(hidden, weight, targets, params)
    if exclude_ids is None or exclude_ids.numel() == 0:
        return out
    logp, entropy = out if return_entropy else (out, None)
    logp = _without(hidden, weight, targets, logp, temperature, exclude_ids)  # (N,)
    return (logp, entropy) if return_entropy else logp


def _without(hidden, weight, targets, logp, temperature, exclude_ids):
    """Log-probs renormalised without the `exclude_ids` tokens, from the k excluded logits only:
        log p'(t) = log p(t) - log(1 - sum_b p(b)),   p(b) = exp(z_b - lse),  lse = z_t - log p(t)
    hidden: (N, H), weight: (V, H), targets/logp: (N,), exclude_ids: (k,). Differentiable."""
    w_t = weight.index_select(0, targets.long()).float()  # (N, H)
    z_t = (hidden.float() * w_t).sum(-1) / temperature  # (N,)
    lse = z_t - logp  # (N,)
    w_b = weight.index_select(0, exclude_ids.to(weight.device).long()).float()  # (k, H)
    z_b = hidden.float() @ w_b.T / temperature  # (N, k)
    p_b = torch.exp(z_b - lse[:, None]).sum(-1)  # (N,)
    return logp - torch.log1p(-p_b.clamp(max=1 - 1e-6))


def linear_logprob_reference(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                             temperature: float = 1.0, *, return_entropy: bool = False,
                             exclude_ids: torch.Tensor | None = None,
                             chunk_rows: int | None = None, vocab_block: int | None = None,
                             backend: str = "auto"):
    """The definition in float64 through autograd (builds N x V: small inputs only) -> fp32 [N].
    `chunk_rows`, `vocab_block` and `backend` are accepted for signature parity and ignored."""
    _check(hidden, weight, targets, temperature)
    logits = hidden.double() @ weight.double().T  # (N, V) float64
    logq = torch.log_softmax(logits / temperature, dim=-1)  # (N, V)
    if exclude_ids is not None and exclude_ids.numel():
        kept = logits.index_fill(1, exclude_ids.to(logits.device).long(), float("-inf"))  # (N, V)
        logp = torch.log_softmax(kept / temperature, dim=-1).gather(1, targets.long()[:, None]).squeeze(1).float()
    else:
        logp = logq.gather(1, targets.long()[:, None]).squeeze(1).float()  # (N,)
    if not return_entropy:
        return logp
    entropy = -(logq.exp() * logq).sum(-1).float().detach()  # (N,)
    return logp, entropy
