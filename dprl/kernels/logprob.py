"""Log-probabilities of chosen tokens without materialising a full-vocabulary log-softmax.

`selective_logprob` is the public entry point; `selective_logprob_reference` is the plain
torch definition it is tested against.
"""
from __future__ import annotations

import torch

# Rows per chunk on the torch path: bounds the fp32 temporary to CHUNK_ROWS x V.
# (4096 x 151,936 fp32 = 2.5 GB for a full Qwen2-VL vocabulary row block, so keep it small.)
CHUNK_ROWS = 1024


def _check(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> None:
    if logits.dim() != 2:
        raise ValueError(f"logits must be [N, V], got shape {tuple(logits.shape)}")
    if targets.shape != logits.shape[:1]:
        raise ValueError(f"targets must be [N] = [{logits.shape[0]}], got shape {tuple(targets.shape)}")
    if targets.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"targets must be int32 or int64 token ids, got {targets.dtype}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")


def selective_logprob_reference(logits: torch.Tensor, targets: torch.Tensor,
                                temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / temperature)[i, targets[i]], computed in float64 -> fp32 [N]."""
    _check(logits, targets, temperature)
    logp = torch.log_softmax(logits.double() / temperature, dim=-1)  # (N, V) float64
    return logp.gather(1, targets.long()[:, None]).squeeze(1).float()  # (N,)


def selective_logprob(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """fp32 log p(target) per row. logits: [N, V] fp32/bf16/fp16; targets: [N] int -> [N] fp32.

    Works in row chunks, so the fp32 temporaries are CHUNK_ROWS x V however large N is.
    Differentiable with respect to `logits`.
    """
    _check(logits, targets, temperature)
    out = []
    for start in range(0, logits.shape[0], CHUNK_ROWS):
        block = logits[start:start + CHUNK_ROWS].float() / temperature  # (n, V) fp32
        tgt = targets[start:start + CHUNK_ROWS].long()  # (n,)
        picked = block.gather(1, tgt[:, None]).squeeze(1)  # (n,)
        out.append(picked - torch.logsumexp(block, dim=-1))  # (n,)
    if not out:
        return logits.new_zeros(0, dtype=torch.float32)
    return torch.cat(out)  # (N,)
