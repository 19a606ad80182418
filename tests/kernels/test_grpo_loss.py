import itertools

import pytest
import torch

from dprl.kernels import (GRPOLossParams, grpo_loss, grpo_loss_reference, linear_grpo_loss,
                          linear_grpo_loss_reference)
from accuracy import assert_cce


def _batch(b, t, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    logp = (torch.randn(b, t, generator=g) * 0.5 - 2)  # (B, T)
    old = logp + torch.randn(b, t, generator=g) * 0.3  # (B, T) wide enough to hit both clips
    ref = logp + torch.randn(b, t, generator=g) * 0.2  # (B, T)
    roll = old + torch.randn(b, t, generator=g) * 0.4  # (B, T)
    adv = torch.randn(b, generator=g)  # (B,)
    mask = torch.rand(b, t, generator=g) > 0.3  # (B, T)
    mask[0] = False  # a fully masked sequence (e.g. a completion truncated to nothing)
    ent = torch.rand(b, t, generator=g) * 3  # (B, T)
    return [x.to(device) for x in (logp, old, ref, roll, adv, mask, ent)]


def _run(fn, logp, params, backend, grad_scale, **kw):
    x = logp.clone().requires_grad_()
    loss, metrics = fn(x, params=params, backend=backend, **kw)
    (loss * grad_scale).backward()
    return loss, metrics, x.grad


PARAMS = [GRPOLossParams(aggregation=a, max_completion_length=16, tis_cap=c, eps_high=eh)
          for a, c, eh in itertools.product(("seq_mean", "token_mean", "dr_grpo"), (None, 2.0), (0.2, 0.28))]


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("params", PARAMS, ids=lambda p: f"{p.aggregation}-tis{p.tis_cap}-eh{p.eps_high}")
@pytest.mark.parametrize("b,t", [(1, 1), (5, 7), (4, 1500)])
def test_matches_float64_reference(backend, params, b, t, device):
    logp, old, ref, roll, adv, mask, ent = _batch(b, t, device)
    kw = dict(advantages=adv, mask=mask, old_logp=old, ref_logp=ref, entropy=ent,
              rollout_logp=roll if params.tis_cap else None)
    scale = 1.7  # a random-ish upstream gradient on the scalar loss
    loss, metrics, grad = _run(grpo_loss, logp, params, backend, scale, **kw)
    cpu = {k: (v.cpu() if v is not None else None) for k, v in kw.items()}
    loss64, m64, grad64 = _run(grpo_loss_reference, logp.cpu().double(), params, "auto", scale, **cpu)
    loss32, m32, grad32 = _run(grpo_loss_reference, logp.cpu(), params, "auto", scale, **cpu)
    assert_cce("loss", loss, loss32, loss64)
    assert_cce("d logp", grad, grad32, grad64)
    for k in m64:
        torch.testing.assert_close(metrics[k].cpu(), m64[k], atol=1e-6, rtol=1e-5)
    if (~mask).any():  # masked tokens carry no gradient
        assert grad.view(b, t)[~mask].abs().max().item() == 0


def test_on_policy_closed_form(device):
    """No old/ref log-probs: ratio 1, no KL, so loss = -mean_b A_b over non-empty sequences
    (empty ones count in B but add 0) and d loss / d logp_t = -A_b / (n_b B) on kept tokens."""
    logp, _, _, _, adv, mask, _ = _batch(4, 6, device, seed=3)
    for backend in ("triton", "torch"):
        x = logp.clone().requires_grad_()
        loss, metrics = grpo_loss(x, adv, mask, backend=backend)
        loss.backward()
        counts = mask.sum(1).float()  # (B,)
        want = -(adv * (counts > 0)).sum() / 4
        torch.testing.assert_close(loss, want, atol=1e-6, rtol=1e-6)
        want_grad = (-adv / (counts.clamp(min=1) * 4))[:, None] * mask  # (B, T)
        torch.testing.assert_close(x.grad, want_grad, atol=1e-7, rtol=1e-6)
        assert metrics["clip_fraction"].item() == 0 and metrics["kl"].item() == 0


def test_clip_fraction_counts_the_right_tokens(device):
    """ratio 2 with A > 0 and ratio 0.5 with A < 0 are clipped; ratio 2 with A < 0 is not."""
    logp = torch.zeros(3, 1, device=device)  # (B, T)
    old = torch.tensor([[-0.6931], [0.6931], [-0.6931]], device=device)  # ratios 2, 0.5, 2
    adv = torch.tensor([1.0, -1.0, -1.0], device=device)
    for backend in ("triton", "torch"):
        x = logp.clone().requires_grad_()
        loss, metrics = grpo_loss(x, adv, old_logp=old, params=GRPOLossParams(beta=0.0), backend=backend)
        loss.backward()
        assert metrics["clip_fraction"].item() == pytest.approx(2 / 3)
        # Only the unclipped token carries gradient: -A r / B = 2 / 3.
        torch.testing.assert_close(x.grad.flatten(), torch.tensor([0.0, 0.0, 2 / 3], device=device),
                                   atol=1e-4, rtol=1e-4)


def test_flat_layout_equals_padded(device):
    logp, old, ref, _, adv, mask, ent = _batch(3, 5, device, seed=4)
    seq = torch.arange(3, device=device).repeat_interleave(5)  # (N,)
    keep = mask.flatten()  # drop padding: the flat layout holds only real tokens
    padded, mp = grpo_loss(logp, adv, mask, old_logp=old, ref_logp=ref, entropy=ent)
    flat, mf = grpo_loss(logp.flatten()[keep], adv, None, old_logp=old.flatten()[keep],
                         ref_logp=ref.flatten()[keep], entropy=ent.flatten()[keep],
                         seq_index=seq[keep], num_seqs=3)
    torch.testing.assert_close(flat, padded)
    for k in mp:
        torch.testing.assert_close(mf[k], mp[k])


def test_all_masked_gives_zero_loss_and_grad(device):
    logp, old, ref, _, adv, mask, _ = _batch(2, 4, device)
    for backend in ("triton", "torch"):
        x = logp.clone().requires_grad_()
        loss, metrics = grpo_loss(x, adv, torch.zeros_like(mask), old_logp=old, ref_logp=ref, backend=backend)
        loss.backward()
        assert loss.item() == 0 and (x.grad == 0).all() and metrics["kl"].item() == 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_default_mask_works_for_any_logp_dtype(dtype, device):
    """mask=None used to take logp's dtype and then clash with the fp32 aggregation weights."""
    logp, old, ref, _, adv, _, _ = _batch(3, 5, device, seed=5)
    x = logp.to(dtype).requires_grad_()
    loss, metrics = grpo_loss(x, adv, old_logp=old, ref_logp=ref)
    loss.backward()
    ones = torch.ones(3, 5, dtype=torch.bool, device=device)
    want, want_m = grpo_loss(x.detach().float(), adv, ones, old_logp=old, ref_logp=ref)
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(metrics["kl"], want_m["kl"])
    assert x.grad.dtype == dtype and torch.isfinite(x.grad.float()).all()


def test_bad_params_raise():
    with pytest.raises(ValueError):
        GRPOLossParams(aggregation="sum")
    with pytest.raises(ValueError):
        GRPOLossParams(aggregation="dr_grpo")
    with pytest.raises(ValueError):
        grpo_loss(torch.zeros(2, 3), torch.zeros(2), rollout_logp=torch.zeros(2, 3))


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_linear_grpo_loss_vs_reference(backend, device):
    g = torch.Generator().manual_seed(5)
    n, h, v, b = 11, 16, 301, 3
    hidden = torch.randn(n, h, generator=g).to(device)  # (N, H)
    weight = torch.randn(v, h, generator=g).to(device) / 4  # (V, H)
    targets = torch.randint(0, v, (n,), generator=g).to(device)  # (N,)
    seq = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2], device=device)  # (N,)
    adv = torch.randn(b, generator=g).to(device)  # (B,)
    with torch.no_grad():
        base = linear_grpo_loss_reference(hidden, weight, targets, adv, seq_index=seq, num_seqs=b)[2]
    old = base.to(device) + 0.3 * torch.randn(n, generator=g).to(device)  # (N,)
    ref = base.to(device) + 0.2 * torch.randn(n, generator=g).to(device)  # (N,)
    outs = []
    for fn, be in ((linear_grpo_loss, backend), (linear_grpo_loss_reference, "auto")):
        hh, ww = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        loss, metrics, logp = fn(hh, ww, targets, adv, old_logp=old, ref_logp=ref, seq_index=seq,
                                 num_seqs=b, temperature=0.9, chunk_rows=4, backend=be)
        loss.backward()
        outs.append((loss, metrics, hh.grad, ww.grad))
    (l1, m1, gh1, gw1), (l2, m2, gh2, gw2) = outs
    torch.testing.assert_close(l1, l2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gh1, gh2, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(gw1, gw2, atol=1e-5, rtol=1e-4)
    for k in m2:
        torch.testing.assert_close(m1[k].cpu(), m2[k], atol=1e-5, rtol=1e-5)
    assert m1["entropy"].item() > 0
