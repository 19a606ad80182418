"""One dispatch rule for every public kernel op (dprl/kernels/_common.py): CUDA -> Triton,
CPU -> torch, and a bad backend name is refused by each op before any work."""
import pytest
import torch

from dprl.kernels import _common, _torch_rows, grpo_loss, linear_grpo_loss, linear_logprob, selective_logprob
from dprl.kernels.grpo_loss import torch_token_terms


def test_auto_resolves_by_device():
    cpu = torch.zeros(2)
    assert _common.resolve_backend("auto", cpu) == "torch"
    assert _common.resolve_backend("triton", cpu) == "triton"  # an explicit choice is kept
    if torch.cuda.is_available():
        gpu = torch.zeros(2, device="cuda")
        assert _common.resolve_backend("auto", gpu) == "triton"
        assert _common.resolve_backend("auto", gpu, cpu) == "torch"  # mixed devices: not Triton


def test_implementation_per_backend():
    assert _common.implementation("logprob_rows", "torch") is _torch_rows
    assert _common.implementation("grpo_token_terms", "torch") is torch_token_terms
    with pytest.raises(ValueError, match="resolve the backend first"):
        _common.implementation("logprob_rows", "auto")


def test_every_public_op_checks_the_backend_name():
    n, h, v = 3, 4, 5
    logits, hidden, weight = torch.zeros(n, v), torch.zeros(n, h), torch.zeros(v, h)
    targets, adv = torch.zeros(n, dtype=torch.long), torch.zeros(1)
    calls = {
        "selective_logprob": lambda: selective_logprob(logits, targets, backend="cuda"),
        "linear_logprob": lambda: linear_logprob(hidden, weight, targets, backend="cuda"),
        "grpo_loss": lambda: grpo_loss(torch.zeros(1, n), adv, backend="cuda"),
        "linear_grpo_loss": lambda: linear_grpo_loss(hidden, weight, targets, adv,
                                                     seq_index=torch.zeros(n, dtype=torch.long),
                                                     num_seqs=1, backend="cuda"),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match="backend must be one of"):
            call()
