"""Grouped attention over a packed row equals dense SDPA with the group mask (each completion sees
its prompt and itself, causally), in outputs and gradients, with grouped-query heads, one-token
completions, one-completion groups and prompts of different lengths."""
import random

import pytest
import torch
import torch.nn.functional as F

from dprl.models.group_attention import GroupLayout, _cuts, group_attention
from dprl.train.shared_prompt import _span_index


def _layout(groups):
    """groups: [(P, [T, ...]), ...] -> (layout, dense (L, L) mask)."""
    prompt_spans, comp_spans, comp_unit, segs, owner = [], [], [], [], []
    cursor = 0
    for u, (P, Ts) in enumerate(groups):
        prompt_spans.append((cursor, P))
        segs += [(u, 0)] * P
        cursor += P
        for j, T in enumerate(Ts, start=1):
            comp_spans.append((cursor, T))
            comp_unit.append(u)
            segs += [(u, j)] * T
            cursor += T
    pi, pv = _span_index(prompt_spans)
    ci, cv = _span_index(comp_spans)
    layout = GroupLayout(pi, pv, ci, cv, torch.tensor(comp_unit), cursor)
    L = cursor
    dense = torch.zeros(L, L, dtype=torch.bool)
    for q in range(L):
        for k in range(q + 1):
            (uq, jq), (uk, jk) = segs[q], segs[k]
            dense[q, k] = uq == uk and (jk == 0 or jk == jq)
    return layout, dense


def _random_groups(rng, wide):
    if wide:  # many completions of very different lengths: several length buckets
        return [(rng.randint(1, 9), [rng.choice([1, 2, 5, 9, 16, 30]) for _ in range(rng.randint(4, 8))])
                for _ in range(rng.randint(2, 3))]
    return [(rng.randint(1, 9), [rng.randint(1, 7) for _ in range(rng.randint(1, 4))])
            for _ in range(rng.randint(1, 3))]


@pytest.mark.parametrize("wide", [False, True], ids=["short", "bucketed"])
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("heads", [(4, 4), (4, 2), (6, 1)], ids=["mha", "gqa2", "mqa"])
def test_matches_dense_masked_sdpa(seed, heads, wide):
    rng = random.Random(seed)
    layout, dense = _layout(_random_groups(rng, wide))
    if wide:
        assert len(layout.buckets) > 1
    hq, hkv = heads
    g = torch.Generator().manual_seed(seed)
    L, d = layout.length, 8
    q = torch.randn(1, hq, L, d, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, hkv, L, d, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, hkv, L, d, generator=g, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(1, L, hq, d, generator=g, dtype=torch.float64)
    got = group_attention(q, k, v, layout, 0.3)  # (1, L, Hq, d)
    got.backward(grad)
    got_grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=dense, scale=0.3,
                                          enable_gqa=hq != hkv).transpose(1, 2)  # (1, L, Hq, d)
    want.backward(grad)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)
    for a, t in zip(got_grads, (q, k, v)):
        torch.testing.assert_close(a, t.grad, atol=1e-12, rtol=1e-10)


def test_a_completion_never_sees_another():
    layout, _ = _layout([(3, [2, 2])])
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 7, 4, generator=g) for _ in range(3))
    base = group_attention(q, k, v, layout, 0.5)
    v2 = v.clone()
    v2[:, :, 5:] += 10  # the second completion's values
    moved = group_attention(q, k, v2, layout, 0.5)
    torch.testing.assert_close(moved[:, :5], base[:, :5])  # prompt and first completion unchanged
    assert not torch.allclose(moved[:, 5:], base[:, 5:])


def test_length_buckets_cut_where_the_padded_work_is_least():
    # Brute force over every way to cut sorted lengths into at most 4 runs.
    import itertools

    rng = random.Random(0)
    for _ in range(30):
        lengths = sorted(rng.randint(1, 40) for _ in range(rng.randint(1, 9)))
        P = rng.randint(0, 20)

        def work(runs):
            return sum((b - a) * lengths[b - 1] * (P + lengths[b - 1]) for a, b in runs)

        n, best = len(lengths), None
        for k in range(0, min(3, n - 1) + 1):
            for inner in itertools.combinations(range(1, n), k):
                edges = [0, *inner, n]
                w = work(list(zip(edges, edges[1:])))
                best = w if best is None else min(best, w)
        runs = _cuts(lengths, P)
        assert runs[0][0] == 0 and runs[-1][1] == n and all(a < b for a, b in runs)
        assert all(r[1] == s[0] for r, s in zip(runs, runs[1:])) and len(runs) <= 4
        assert work(runs) == best
