"""dprl.kernels against the torch reference beside each op (its float64 definition, same
signature), forward and forward + backward, timed as pairs by pytest-benchmark.

The baseline is the definition each op is tested against, not tuned eager fp32 torch
(benchmarks/bench_kernels.py times that, with peak memory, at real vocabulary sizes). On CUDA the
ops run on the GPU, timed with CUDA events after an L2 flush (side_by_side.py).
"""
import pytest
import torch

from dprl.kernels import (grpo_loss, grpo_loss_reference, linear_grpo_loss, linear_grpo_loss_reference,
                          linear_logprob, linear_logprob_reference, selective_logprob,
                          selective_logprob_reference)
from dprl.kernels.grpo_loss import METRICS
from side_by_side import CUDA, IMPLS, assert_tensors_close, kernel_marks, run_pair

pytestmark = [pytest.mark.bench, *kernel_marks()]

DEVICE = "cuda" if CUDA else "cpu"
PASSES = ("fwd", "fwd+bwd")
# (fast subset, --bench-full): a Qwen2-VL vocabulary (151,936) is benchmarks/bench_kernels.py's.
SELECTIVE = {"fast": dict(n=256, v=8192), "full": dict(n=1024, v=32768)}
LINEAR = {"fast": dict(n=128, h=64, v=8192), "full": dict(n=512, h=256, v=32768)}
GRPO = {"fast": dict(b=16, t=256), "full": dict(b=64, t=1024)}
LINEAR_GRPO = {"fast": dict(n=128, h=64, v=8192, b=4), "full": dict(n=512, h=256, v=32768, b=8)}


def _shape(request, table: dict) -> dict:
    return table["full" if request.config.getoption("bench_full") else "fast"]


def _randn(g, *shape, scale=1.0):
    return (torch.randn(*shape, generator=g) * scale).to(DEVICE)


def _label(shape: dict) -> str:
    return " ".join(f"{k.upper()}={v}" for k, v in shape.items())


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("pass_", PASSES)
def test_selective_logprob(benchmark, request, pass_, impl):
    s = _shape(request, SELECTIVE)
    g = torch.Generator().manual_seed(0)
    logits = _randn(g, s["n"], s["v"], scale=3.0).requires_grad_(pass_ == "fwd+bwd")  # (N, V)
    targets = torch.randint(0, s["v"], (s["n"],), generator=g).to(DEVICE)  # (N,)
    grad = _randn(g, s["n"])  # (N,) upstream gradient

    def run(op):
        def call():
            logp = op(logits, targets)  # (N,)
            if pass_ == "fwd":
                return logp
            return logp.detach(), *torch.autograd.grad(logp, logits, grad)  # (N,), (N, V)
        return call

    run_pair(benchmark, request.config, impl, f"selective_logprob {pass_} {_label(s)}",
             {"dprl": run(selective_logprob), "baseline": run(selective_logprob_reference)},
             assert_tensors_close, gpu=CUDA, info={"op": "selective_logprob", "pass": pass_, **s})


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("pass_", PASSES)
def test_linear_logprob(benchmark, request, pass_, impl):
    s = _shape(request, LINEAR)
    g = torch.Generator().manual_seed(1)
    bwd = pass_ == "fwd+bwd"
    hidden = _randn(g, s["n"], s["h"]).requires_grad_(bwd)  # (N, H)
    weight = _randn(g, s["v"], s["h"], scale=2 / s["h"] ** 0.5).requires_grad_(bwd)  # (V, H)
    targets = torch.randint(0, s["v"], (s["n"],), generator=g).to(DEVICE)  # (N,)
    grad = _randn(g, s["n"])  # (N,)

    def run(op):
        def call():
            logp = op(hidden, weight, targets)  # (N,)
            if not bwd:
                return logp
            return logp.detach(), *torch.autograd.grad(logp, (hidden, weight), grad)  # (N,H), (V,H)
        return call

    run_pair(benchmark, request.config, impl, f"linear_logprob {pass_} {_label(s)}",
             {"dprl": run(linear_logprob), "baseline": run(linear_logprob_reference)},
             assert_tensors_close, gpu=CUDA, info={"op": "linear_logprob", "pass": pass_, **s})


def _grpo_inputs(g, logp, b):
    """Log-probs of the sampling policy and the reference near `logp`, advantages [B]."""
    old = logp.detach() + _randn(g, *logp.shape, scale=0.3)  # wide enough to hit both clips
    ref = logp.detach() + _randn(g, *logp.shape, scale=0.2)
    return old, ref, _randn(g, b)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("pass_", PASSES)
def test_grpo_loss(benchmark, request, pass_, impl):
    s = _shape(request, GRPO)
    b, t = s["b"], s["t"]
    g = torch.Generator().manual_seed(2)
    logp = _randn(g, b, t, scale=0.5) - 2  # (B, T)
    old, ref, adv = _grpo_inputs(g, logp, b)  # (B, T), (B, T), (B,)
    mask = (torch.rand(b, t, generator=g) > 0.3).to(DEVICE)  # (B, T)
    entropy = _randn(g, b, t).abs()  # (B, T)
    logp.requires_grad_(pass_ == "fwd+bwd")

    def run(op):
        def call():
            loss, metrics = op(logp, adv, mask, old_logp=old, ref_logp=ref, entropy=entropy)
            out = (loss.detach(), *(metrics[k] for k in METRICS))
            if pass_ == "fwd":
                return out
            return *out, *torch.autograd.grad(loss, logp)  # ..., (B, T)
        return call

    run_pair(benchmark, request.config, impl, f"grpo_loss {pass_} {_label(s)}",
             {"dprl": run(grpo_loss), "baseline": run(grpo_loss_reference)},
             assert_tensors_close, gpu=CUDA, info={"op": "grpo_loss", "pass": pass_, **s})


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("pass_", PASSES)
def test_linear_grpo_loss(benchmark, request, pass_, impl):
    s = _shape(request, LINEAR_GRPO)
    n, b = s["n"], s["b"]
    g = torch.Generator().manual_seed(3)
    bwd = pass_ == "fwd+bwd"
    hidden = _randn(g, n, s["h"]).requires_grad_(bwd)  # (N, H)
    weight = _randn(g, s["v"], s["h"], scale=2 / s["h"] ** 0.5).requires_grad_(bwd)  # (V, H)
    targets = torch.randint(0, s["v"], (n,), generator=g).to(DEVICE)  # (N,)
    seq = torch.arange(b).repeat_interleave(n // b).to(DEVICE)  # (N,) b sequences of n / b tokens
    with torch.no_grad():
        logp = linear_logprob(hidden, weight, targets)  # (N,) the rollout policy's, roughly
    old, ref, adv = _grpo_inputs(g, logp, b)

    def run(op):
        def call():
            loss, metrics, lp = op(hidden, weight, targets, adv, old_logp=old, ref_logp=ref,
                                   seq_index=seq, num_seqs=b)
            out = (loss.detach(), *(metrics[k] for k in METRICS), lp)
            if not bwd:
                return out
            return *out, *torch.autograd.grad(loss, (hidden, weight))  # ..., (N, H), (V, H)
        return call

    run_pair(benchmark, request.config, impl, f"linear_grpo_loss {pass_} {_label(s)}",
             {"dprl": run(linear_grpo_loss), "baseline": run(linear_grpo_loss_reference)},
             assert_tensors_close, gpu=CUDA, info={"op": "linear_grpo_loss", "pass": pass_, **s})
