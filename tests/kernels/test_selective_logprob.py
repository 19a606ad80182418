import pytest
import torch

from dprl.kernels import selective_logprob, selective_logprob_reference
from accuracy import assert_cce

# (N, V): one row; V not a power of two; V just past one 4096-wide Triton block; many rows.
SHAPES = [(1, 17), (5, 1000), (3, 4097), (33, 300)]


def _inputs(n, v, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, v, generator=g, dtype=torch.float64) * 3).float().to(device)  # (N, V)
    targets = torch.randint(0, v, (n,), generator=g).to(device)  # (N,)
    grad = torch.randn(n, generator=g).to(device)  # (N,) upstream gradient
    return logits, targets, grad


def _torch_fp32(logits, targets, temperature):
    """What a user would write in eager fp32 (the same-dtype baseline of the accuracy rule)."""
    x = logits.detach().clone().requires_grad_()
    logq = torch.log_softmax(x / temperature, dim=-1)  # (N, V)
    return x, logq.gather(1, targets[:, None]).squeeze(1), -(logq.exp() * logq).sum(-1)


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("n,v", SHAPES)
def test_forward_backward_vs_float64(backend, temperature, n, v, device, small_chunks):
    logits, targets, grad = _inputs(n, v, device)
    x = logits.clone().requires_grad_()
    logp, ent = selective_logprob(x, targets, temperature, return_entropy=True, backend=backend)
    logp.backward(grad)
    xr = logits.cpu().double().requires_grad_()  # (N, V) float64
    logq = torch.log_softmax(xr / temperature, -1)  # (N, V)
    ref_d = logq.gather(1, targets.cpu()[:, None]).squeeze(1)  # (N,)
    ent_ref = -(logq.exp() * logq).sum(-1).detach()  # (N,)
    (g64,) = torch.autograd.grad(ref_d, xr, grad.cpu().double())
    xt, lt, et = _torch_fp32(logits.cpu(), targets.cpu(), temperature)
    lt.backward(grad.cpu())
    assert logp.dtype == torch.float32 and logp.shape == (n,)
    assert_cce("logp", logp, lt, ref_d)
    assert_cce("entropy", ent, et.detach(), ent_ref)
    assert_cce("grad", x.grad, xt.grad, g64)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_masked_vocabulary_entries(backend, device, small_chunks):
    """-inf logits (top-k/top-p truncation, banned tokens) must give exact zeros, not NaN; here a
    whole leading 4096 block of a row is masked."""
    logits, targets, grad = _inputs(3, 4097, device, seed=1)
    logits[0, :4096] = float("-inf")
    targets[0] = 4096  # the only finite entry: log p = 0, entropy 0
    logits[1, ::3] = float("-inf")
    targets[1] = 1
    x = logits.clone().requires_grad_()
    logp, ent = selective_logprob(x, targets, 0.9, return_entropy=True, backend=backend)
    logp.backward(grad)
    xr = logits.cpu().clone().requires_grad_()
    ref, ent_ref = selective_logprob_reference(xr, targets.cpu(), 0.9, return_entropy=True)
    ref.backward(grad.cpu())
    assert torch.isfinite(logp).all() and torch.isfinite(ent).all() and torch.isfinite(x.grad).all()
    assert logp[0].item() == pytest.approx(0.0, abs=1e-6) and ent[0].item() == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(logp.cpu(), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent.cpu(), ent_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x.grad.cpu(), xr.grad, atol=1e-6, rtol=1e-5)
    assert (x.grad[1, ::3] == 0).all()


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_inplace_backward_writes_into_logits(backend, device, small_chunks):
    logits, targets, grad = _inputs(6, 999, device, seed=2)
    x = logits.clone().requires_grad_()
    selective_logprob(x, targets, 1.3, backend=backend).backward(grad)
    buf = logits.clone()
    leaf = buf.requires_grad_()
    # A non-leaf view of the buffer, as the logits of a model are: its gradient lands in buf.
    y = leaf * 1.0  # (N, V)
    captured = {}
    y.register_hook(lambda g: captured.setdefault("g", g))
    selective_logprob(y, targets, 1.3, inplace_backward=True, backend=backend).backward(grad)
    assert captured["g"].data_ptr() == y.data_ptr()
    torch.testing.assert_close(captured["g"], x.grad, atol=1e-7, rtol=1e-6)


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        selective_logprob(torch.zeros(3, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError):
        selective_logprob(torch.zeros(3, 5), torch.zeros(3))
    with pytest.raises(ValueError):
        selective_logprob(torch.zeros(3, 5), torch.zeros(3, dtype=torch.long), temperature=0.0)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_zero_rows(backend, device):
    x = torch.zeros(0, 7, device=device, requires_grad=True)
    out = selective_logprob(x, torch.zeros(0, dtype=torch.long, device=device), backend=backend)
    assert out.shape == (0,)
    out.sum().backward()
    assert x.grad.shape == (0, 7)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("n,v", [(1024, 151936), (7, 32001)])
def test_bf16_real_shapes_cuda(n, v):
    logits, targets, grad = _inputs(n, v, "cuda", seed=3)
    logits = logits.bfloat16()
    x = logits.clone().requires_grad_()
    selective_logprob(x, targets, 1.0).backward(grad)
    xt = logits.clone().requires_grad_()
    lt = torch.log_softmax(xt.float(), -1).gather(1, targets[:, None]).squeeze(1)
    lt.backward(grad)
    xr = logits.double().requires_grad_()
    ref = torch.log_softmax(xr, -1).gather(1, targets[:, None]).squeeze(1)
    ref.backward(grad.double())
    assert_cce("logp bf16", selective_logprob(logits, targets), lt, ref)
    assert_cce("grad bf16", x.grad, xt.grad, xr.grad)
