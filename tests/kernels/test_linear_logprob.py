import pytest
import torch

from dprl.kernels import linear_logprob, linear_logprob_reference
from accuracy import assert_cce

# (N, H, V, chunk_rows): one token; V not a power of two with chunks that do not divide N.
CASES = [(1, 8, 17, None), (13, 24, 1000, 4), (40, 16, 333, 7), (9, 32, 4097, None)]


def _inputs(n, h, v, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g).to(device)  # (N, H)
    weight = (torch.randn(v, h, generator=g) / h ** 0.5 * 2).to(device)  # (V, H)
    targets = torch.randint(0, v, (n,), generator=g).to(device)  # (N,)
    grad = torch.randn(n, generator=g).to(device)  # (N,)
    return hidden, weight, targets, grad


def _eager(hidden, weight, targets, temperature, grad, dtype):
    """Eager torch in `dtype` (float64 = the reference): logp, entropy, d hidden, d weight."""
    h = hidden.detach().cpu().to(dtype).requires_grad_()
    w = weight.detach().cpu().to(dtype).requires_grad_()
    logq = torch.log_softmax(h @ w.T / temperature, -1)  # (N, V)
    logp = logq.gather(1, targets.cpu()[:, None]).squeeze(1)  # (N,)
    ent = -(logq.exp() * logq).sum(-1).detach()  # (N,)
    logp.backward(grad.cpu().to(dtype))
    return logp.detach(), ent, h.grad, w.grad


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("temperature", [1.0, 1.3])
@pytest.mark.parametrize("n,h,v,chunk", CASES)
def test_forward_backward_vs_float64(backend, temperature, n, h, v, chunk, device, small_chunks):
    hidden, weight, targets, grad = _inputs(n, h, v, device)
    hh, ww = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    logp, ent = linear_logprob(hh, ww, targets, temperature, return_entropy=True, chunk_rows=chunk,
                               backend=backend)
    logp.backward(grad)
    ref = _eager(hidden, weight, targets, temperature, grad, torch.float64)
    same = _eager(hidden, weight, targets, temperature, grad, torch.float32)
    assert logp.dtype == torch.float32 and logp.shape == (n,)
    for name, got, s, r in zip(("logp", "entropy", "d hidden", "d weight"),
                               (logp, ent, hh.grad, ww.grad), same, ref):
        assert_cce(name, got, s, r)


def test_reference_matches_definition():
    hidden, weight, targets, grad = _inputs(5, 8, 50, "cpu")
    logp, ent = linear_logprob_reference(hidden, weight, targets, 0.5, return_entropy=True)
    ref = _eager(hidden, weight, targets, 0.5, grad, torch.float64)
    torch.testing.assert_close(logp, ref[0].float())
    torch.testing.assert_close(ent, ref[1].float())


def test_only_hidden_needs_grad(device):
    hidden, weight, targets, grad = _inputs(6, 8, 100, device)
    hh = hidden.clone().requires_grad_()
    linear_logprob(hh, weight, targets, chunk_rows=4).backward(grad)
    ref = _eager(hidden, weight, targets, 1.0, grad, torch.float64)
    torch.testing.assert_close(hh.grad.double().cpu(), ref[2], atol=1e-5, rtol=1e-5)


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        linear_logprob(torch.zeros(3, 4), torch.zeros(5, 6), torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError):
        linear_logprob(torch.zeros(3, 4), torch.zeros(5, 4, dtype=torch.float64),
                       torch.zeros(3, dtype=torch.long))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_qwen_vocab_cuda():
    hidden, weight, targets, grad = _inputs(512, 256, 151936, "cuda", seed=4)
    hidden, weight = hidden.bfloat16(), weight.bfloat16()
    hh, ww = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    linear_logprob(hh, ww, targets, chunk_rows=128).backward(grad)
    h = hidden.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    lt = torch.log_softmax((h @ w.T).float(), -1).gather(1, targets[:, None]).squeeze(1)  # eager bf16
    lt.backward(grad)
    ref = _eager(hidden, weight, targets, 1.0, grad, torch.float64)
    assert_cce("logp bf16", linear_logprob(hidden, weight, targets), lt.detach(), ref[0])
    assert_cce("d hidden bf16", hh.grad, h.grad, ref[2])
    assert_cce("d weight bf16", ww.grad, w.grad, ref[3])


# (N, H, V, vocab_block): blocks that do not divide V, a block of one entry, one block for all.
VOCAB_TILE_CASES = [(1, 8, 17, 5), (13, 24, 1000, 37), (40, 16, 333, 1), (9, 32, 4097, 4097)]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("n,h,v,block", VOCAB_TILE_CASES)
def test_vocab_tiles_vs_float64(temperature, n, h, v, block):
    hidden, weight, targets, grad = _inputs(n, h, v, "cpu", seed=n + v)
    targets[: n // 2] = (torch.arange(n // 2) * block) % v  # first entry of a block
    hh, ww = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    logp, ent = linear_logprob(hh, ww, targets, temperature, return_entropy=True,
                               vocab_block=block, backend="torch")
    logp.backward(grad)
    ref = _eager(hidden, weight, targets, temperature, grad, torch.float64)
    same = _eager(hidden, weight, targets, temperature, grad, torch.float32)
    for name, got, s, r in zip(("logp", "entropy", "d hidden", "d weight"),
                               (logp, ent, hh.grad, ww.grad), same, ref):
        assert_cce(name, got, s, r)


def test_vocab_tiles_large_logits_and_late_max():
    """The running max must be rescaled when a later block holds a larger logit: logits of a few
    hundred, rising along the vocabulary so every block brings a new max."""
    n, h, v = 6, 8, 300
    hidden, weight, targets, grad = _inputs(n, h, v, "cpu", seed=3)
    weight = weight * 40 + torch.linspace(0, 300, v)[:, None] / h ** 0.5
    hh, ww = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    logp, ent = linear_logprob(hh, ww, targets, return_entropy=True, vocab_block=16)
    logp.backward(grad)
    ref = _eager(hidden, weight, targets, 1.0, grad, torch.float64)
    same = _eager(hidden, weight, targets, 1.0, grad, torch.float32)
    for name, got, s, r in zip(("logp", "entropy", "d hidden", "d weight"),
                               (logp, ent, hh.grad, ww.grad), same, ref):
        assert_cce(name, got, s, r)


def test_cpu_picks_vocab_tiles_when_they_stream_less():
    from dprl.kernels._torch_vocab_tiles import vocab_tiles_stream_less
    chunk = 1 << 23
    assert vocab_tiles_stream_less(2048, 151936, 256, chunk)  # few tokens, Qwen2-VL vocabulary
    assert not vocab_tiles_stream_less(1 << 20, 1000, 64, chunk)  # many tokens, small vocabulary


def test_vocab_tiles_bad_arguments():
    hidden, weight, targets, _ = _inputs(4, 8, 50, "cpu")
    with pytest.raises(ValueError, match="not both"):
        linear_logprob(hidden, weight, targets, chunk_rows=2, vocab_block=10)
    with pytest.raises(ValueError, match=">= 1"):
        linear_logprob(hidden, weight, targets, vocab_block=0)
    with pytest.raises(ValueError, match="token ids"):
        linear_logprob(hidden, weight, torch.tensor([0, 1, 2, 50]), vocab_block=10)


def _eager_without(hidden, weight, targets, temperature, grad, exclude, dtype):
    """Eager torch in `dtype`: log-probs of the softmax with the `exclude` logits at -inf."""
    h = hidden.detach().cpu().to(dtype).requires_grad_()
    w = weight.detach().cpu().to(dtype).requires_grad_()
    logits = (h @ w.T / temperature).index_fill(1, exclude.cpu(), float("-inf"))  # (N, V)
    logp = torch.log_softmax(logits, -1).gather(1, targets.cpu()[:, None]).squeeze(1)  # (N,)
    logp.backward(grad.cpu().to(dtype))
    return logp.detach(), h.grad, w.grad


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("heavy", [False, True], ids=["random", "excluded_heavy"])
def test_exclude_ids_renormalise_without_those_tokens(backend, heavy, device, small_chunks):
    """The sampler never draws vision tokens; the fused op scores the same renormalised softmax,
    also when the excluded tokens hold up to 76% of a token's probability (the correction is then
    large; the rule's limit is stated in linear_logprob's docstring)."""
    n, h, v = 13, 24, 1000
    hidden, weight, targets, grad = _inputs(n, h, v, device, seed=3)
    exclude = torch.tensor([7, 500, 999], device=device)
    targets = torch.where(torch.isin(targets, exclude), targets + 1, targets)
    if heavy:  # excluded rows aligned with the hidden states: 0.1% to 76% of the probability
        weight = weight.clone()
        weight[exclude] = hidden.mean(0) * 2
    hh, ww = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    logp = linear_logprob(hh, ww, targets, 1.3, exclude_ids=exclude, chunk_rows=4, backend=backend)
    logp.backward(grad)
    ref = _eager_without(hidden, weight, targets, 1.3, grad, exclude, torch.float64)
    same = _eager_without(hidden, weight, targets, 1.3, grad, exclude, torch.float32)
    for name, got, s, r in zip(("logp", "d hidden", "d weight"), (logp, hh.grad, ww.grad), same, ref):
        assert_cce(name, got, s, r)
    torch.testing.assert_close(linear_logprob_reference(hidden, weight, targets, 1.3, exclude_ids=exclude).cpu(),
                               ref[0].float(), atol=1e-6, rtol=0)
    # And it differs from the full softmax, so the test would see the exclusion missing.
    full = linear_logprob(hidden, weight, targets, 1.3, backend=backend)
    assert (full - logp.detach()).abs().max() > 1e-3
