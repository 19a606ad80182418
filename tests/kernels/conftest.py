"""Triton kernels run for real on CUDA; without a GPU they run under Triton's interpreter, which
must be switched on before any @triton.jit function is defined (the kernels import lazily)."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def device():
    return DEVICE


@pytest.fixture
def small_chunks(monkeypatch):
    """Row blocks of 4096 fp32 elements on the torch path, so small tests cross many chunks."""
    from dprl.kernels import _common
    monkeypatch.setattr(_common, "CPU_CHUNK_ELEMS", 4096)
