"""Attention over packed GRPO groups: each prompt once, each completion attending to its prompt
and itself only, with no N x N mask and no work on pairs that never see each other.

A micro-batch of groups is one packed row (B = 1) of all its tokens:
    [ prompt 1 | completion 1.1 | ... | completion 1.G | prompt 2 | completion 2.1 | ... ]
A dense masked attention over that row would spend (sum of lengths)^2 work, most of it on pairs
the mask forbids (G = 8 completions of ~100 tokens behind a ~130-token prompt: 7x the useful
score entries). Here the queries are gathered into two small padded batches:
    prompts:      (U, heads, P_max, d) against their own keys, causal;
    completions:  (C, heads, T_max, d) against [their prompt's keys | their own keys, causal];
so the work is sum_u P_u^2 + sum_c T_c (P_u + T_c), what G separate rows would cost for their
completions, and the prompt's keys are computed once. Completions are padded to the longest of
their length bucket, not of the micro-batch: sorted by length and cut into at most 4 buckets
where the padded work is least (the main job's checkpoint writes 20-112 tokens, mean 69, so one
bucket padded to 112 spends about twice the useful work). The gather indices are built once per
micro-batch (GroupLayout) and serve every layer and every pass.

It is registered as the attention implementation "dprl_group": a call that carries no
`group_layout` (generation, the vision tower, any other forward) is plain SDPA.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

NAME = "dprl_group"


@dataclass
class GroupLayout:
    """Where each prompt and completion sits in the packed row, padded for batched attention.

    prompt_index: (U, P_max) packed positions of each unit's prompt tokens (0 where padding)
    prompt_valid: (U, P_max) bool
    comp_index:   (C, T_max) packed positions of each completion's tokens (0 where padding)
    comp_valid:   (C, T_max) bool
    comp_unit:    (C,) the unit (prompt) each completion belongs to
    length:       packed row length
    """

    prompt_index: torch.Tensor
    prompt_valid: torch.Tensor
    comp_index: torch.Tensor
    comp_valid: torch.Tensor
    comp_unit: torch.Tensor
    length: int

    def __post_init__(self):
        P = self.prompt_index.shape[1]
        causal_p = torch.ones(P, P, dtype=torch.bool).tril()  # (P, P)
        # (U, 1, P, P): causal over real keys; a padding query sees key 0 (never an empty row).
        self.prompt_mask = (causal_p & self.prompt_valid[:, None, :])[:, None]
        lengths = self.comp_valid.sum(1)  # (C,)
        order = torch.argsort(lengths, stable=True)  # (C,) shortest first
        sorted_lengths = lengths[order].tolist()
        self.buckets = [self._bucket(order[a:b], sorted_lengths[b - 1])
                        for a, b in _cuts(sorted_lengths, P)]
        # Where each packed position's output sits in [prompt outputs (U * P) | each bucket's
        # completion outputs (C_b * T_b)], flattened: the output is one gather, not scatters.
        source = torch.zeros(self.length, dtype=torch.long)  # (L,)
        source[self.prompt_index[self.prompt_valid]] = self.prompt_valid.reshape(-1).nonzero()[:, 0]
        offset = self.prompt_valid.numel()
        for b in self.buckets:
            source[b.index[b.valid]] = offset + b.valid.reshape(-1).nonzero()[:, 0]
            offset += b.valid.numel()
        self.output_source = source

    def _bucket(self, comps: torch.Tensor, T: int) -> "CompletionBucket":
        """The completions `comps` padded to T, the longest of them, with their attention mask."""
        index, valid = self.comp_index[comps, :T], self.comp_valid[comps, :T]  # (C_b, T)
        unit = self.comp_unit[comps]  # (C_b,)
        P = self.prompt_index.shape[1]
        own = torch.ones(T, T, dtype=torch.bool).tril() & valid[:, None, :]  # (C_b, T, T)
        prompt_keys = self.prompt_valid[unit][:, None, :].expand(-1, T, -1)  # (C_b, T, P)
        mask = torch.cat([prompt_keys, own], dim=2)[:, None]  # (C_b, 1, T, P + T)
        return CompletionBucket(index, valid, unit, mask)


@dataclass
class CompletionBucket:
    """Completions of like length, padded to the longest of them (T)."""

    index: torch.Tensor  # (C_b, T) packed positions (0 where padding)
    valid: torch.Tensor  # (C_b, T) bool
    unit: torch.Tensor  # (C_b,) each completion's unit (prompt)
    mask: torch.Tensor  # (C_b, 1, T, P + T) its prompt's keys, then its own, causally


def _cuts(sorted_lengths: list[int], prompt_len: int, max_buckets: int = 4) -> list[tuple[int, int]]:
    """Where to cut completions sorted by length into at most `max_buckets` runs so that the
    padded attention work, sum over runs of count * T_max * (P + T_max), is least -> [(a, b)].
    Exact dynamic programming; the inner minimum over where a run starts is one numpy call, as
    a micro-batch can hold hundreds of completions."""
    n = len(sorted_lengths)
    t = np.asarray(sorted_lengths, dtype=np.float64)
    per_token = t * (prompt_len + t)  # (n,) a run ending at b costs (b - a) * per_token[b - 1]
    starts = np.arange(n + 1)  # (n + 1,)
    # best[k, b]: least work for the first b completions in k runs; cut[k, b]: where the last starts.
    best = np.full((max_buckets + 1, n + 1), np.inf)
    cut = np.zeros((max_buckets + 1, n + 1), dtype=np.int64)
    best[0, 0] = 0
    for k in range(1, max_buckets + 1):
        for b in range(1, n + 1):
            total = best[k - 1, :b] + (b - starts[:b]) * per_token[b - 1]  # (b,) over the start a
            cut[k, b] = int(np.argmin(total))
            best[k, b] = total[cut[k, b]]
    k = int(np.argmin(best[1:, n])) + 1
    runs, b = [], n
    while k:
        a = int(cut[k, b])
        runs.append((a, b))
        b, k = a, k - 1
    return runs[::-1]


def group_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: GroupLayout,
                    scaling: float) -> torch.Tensor:
    """q: (1, Hq, L, d), k / v: (1, Hkv, L, d) of the packed row -> (1, L, Hq, d)."""
    q, k, v = q[0], k[0], v[0]  # (H, L, d)
    gqa = q.shape[0] != k.shape[0]

    # index_select, not advanced indexing: its backward is an index_add, where x[:, index]'s is
    # an accumulating index_put (measured on (8, 7294, 64) with (64, 112) indices on a 2-core
    # CPU: 5.6 ms forward + backward against 17.5 ms).
    def gather(x, index):  # (H, L, d), (R, n) -> (R, H, n, d)
        H, _, d = x.shape
        return x.index_select(1, index.reshape(-1)).view(H, *index.shape, d).transpose(0, 1)

    kp, vp = gather(k, layout.prompt_index), gather(v, layout.prompt_index)  # (U, Hkv, P, d)
    out_p = F.scaled_dot_product_attention(gather(q, layout.prompt_index), kp, vp,
                                           attn_mask=layout.prompt_mask, scale=scaling,
                                           enable_gqa=gqa)  # (U, Hq, P, d)
    Hq, d = q.shape[0], q.shape[2]
    pieces = [out_p.transpose(1, 2).reshape(-1, Hq, d)]  # (U * P, Hq, d)
    for b in layout.buckets:
        kc = torch.cat([kp.index_select(0, b.unit), gather(k, b.index)], dim=2)  # (C_b, Hkv, P + T, d)
        vc = torch.cat([vp.index_select(0, b.unit), gather(v, b.index)], dim=2)  # (C_b, Hkv, P + T, d)
        out_c = F.scaled_dot_product_attention(gather(q, b.index), kc, vc, attn_mask=b.mask,
                                               scale=scaling, enable_gqa=gqa)  # (C_b, Hq, T, d)
        pieces.append(out_c.transpose(1, 2).reshape(-1, Hq, d))  # (C_b * T, Hq, d)
    out = torch.cat(pieces).index_select(0, layout.output_source)  # (L, Hq, d)
    return out[None]  # (1, L, Hq, d)


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
               group_layout: GroupLayout | None = None, **kwargs):
    """The AttentionInterface entry: grouped attention for the text model's causal layers when
    a layout is passed, HF's SDPA otherwise (the vision tower's layers are not causal)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if group_layout is None or not getattr(module, "is_causal", False):
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      dropout=dropout, **kwargs)
    if query.shape[0] != 1 or query.shape[2] != group_layout.length:
        raise ValueError(f"group attention expects one packed row of {group_layout.length} tokens, "
                         f"got queries {tuple(query.shape)}")
    return group_attention(query, key, value, group_layout, scaling), None


def register() -> str:
    """Registers "dprl_group" with transformers (idempotent) -> its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, _attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    return NAME


def use_group_attention(model) -> bool:
    """Switches a loaded HF model to "dprl_group" when it runs SDPA now (the switch changes
    nothing for calls without a layout) -> whether it did. Other implementations are kept."""
    if getattr(model.config, "_attn_implementation", None) == NAME:
        return True
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    model.set_attn_implementation(register())
    return True
