"""Token log-prob and GRPO-loss ops: Triton on CUDA, memory-bounded chunked torch on CPU.

Each op has a float64 torch reference with the same signature beside it.
"""
from dprl.kernels.grpo_loss import GRPOLossParams, grpo_loss, grpo_loss_reference
from dprl.kernels.linear_grpo_loss import linear_grpo_loss, linear_grpo_loss_reference
from dprl.kernels.linear_logprob import linear_logprob, linear_logprob_reference
from dprl.kernels.selective_logprob import selective_logprob, selective_logprob_reference

__all__ = [
    "GRPOLossParams", "grpo_loss", "grpo_loss_reference",
    "linear_grpo_loss", "linear_grpo_loss_reference",
    "linear_logprob", "linear_logprob_reference",
    "selective_logprob", "selective_logprob_reference",
]
