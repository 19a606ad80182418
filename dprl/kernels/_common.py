"""Shared checks, chunk sizing and the backend dispatch of every kernel op: CUDA tensors go to
Triton, CPU tensors to the torch path."""
from __future__ import annotations

import importlib

import torch

# Elements of one row chunk on the torch path. The chunked ops keep at most two fp32 temporaries
# of this size, so 8M elements bound them to 64 MB whatever N and V are (a full Qwen2-VL row
# block of 1024 x 151,936 fp32 would be 620 MB).
CPU_CHUNK_ELEMS = 1 << 23

# Bytes of the logits buffer for one token chunk of `linear_logprob` on the GPU. Issue 4's target
# is <= 256 MB beyond inputs, weights and their gradients; 128 MB leaves room for the chunk's
# hidden-state gradient and keeps the chunk GEMMs large (>= 384 x 3584 x 151,936 on Qwen2-VL-7B).
GPU_CHUNK_BYTES = 128 << 20

BACKENDS = ("auto", "triton", "torch")

# Each op's implementation per resolved backend, as "module" or "module:attribute". Both sides
# keep one contract (the torch twin is documented against the Triton one). Imported on first
# use: triton is a heavy import a CPU run never needs, and its kernels must be defined after
# TRITON_INTERPRET is set (the tests set it to run them on CPU).
IMPLEMENTATIONS = {
    "logprob_rows": {"triton": "dprl.kernels.triton.logprob_rows",
                     "torch": "dprl.kernels._torch_rows"},
    "grpo_token_terms": {"triton": "dprl.kernels.triton.grpo_loss:grpo_token_terms",
                         "torch": "dprl.kernels.grpo_loss:torch_token_terms"},
}


def resolve_backend(backend: str, *tensors: torch.Tensor) -> str:
    """The one dispatch rule, called by every public op: 'auto' -> 'triton' when all `tensors`
    are on CUDA, 'torch' otherwise. 'triton' on CPU tensors needs TRITON_INTERPRET=1 set before
    the kernels are imported (the tests do this)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    return "triton" if all(t.is_cuda for t in tensors) else "torch"


def implementation(op: str, backend: str):
    """The module or function behind `op` (a key of IMPLEMENTATIONS) for a resolved backend."""
    if backend not in ("triton", "torch"):
        raise ValueError(f"resolve the backend first (resolve_backend), got {backend!r}")
    module, _, attr = IMPLEMENTATIONS[op][backend].partition(":")
    found = importlib.import_module(module)
    return getattr(found, attr) if attr else found


def rows_per_chunk(n_rows: int, row_elems: int, chunk_elems: int) -> int:
    """Rows of width `row_elems` that fit in `chunk_elems` elements (at least 1, at most n_rows)."""
    return max(1, min(n_rows, chunk_elems // max(1, row_elems)))


def check_targets(targets: torch.Tensor, n: int, device: torch.device) -> None:
    if targets.shape != (n,):
        raise ValueError(f"targets must be [N] = [{n}], got shape {tuple(targets.shape)}")
    if targets.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"targets must be int32 or int64 token ids, got {targets.dtype}")
    if targets.device != device:
        raise ValueError(f"targets on {targets.device}, expected {device}")


def check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")


def check_float(name: str, t: torch.Tensor) -> None:
    if t.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"{name} must be float32, bfloat16 or float16, got {t.dtype}")
