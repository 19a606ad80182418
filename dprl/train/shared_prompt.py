"""The step's batch, built once: each prompt encoded once, its image encoded once, and each
group laid out as one row (the prompt, then its completions) that the trainer runs once.

All G completions of a prompt share its image and its prompt tokens. Instead of G rows that each
repeat the prompt (and run the vision tower on its image), a group is one row

    [ prompt (P) | completion 1 (T1) | completion 2 (T2) | ... | padding ]

with an attention mask in which every completion sees the prompt and itself only (causally),
and Qwen2-VL mRoPE positions in which every completion continues from the prompt's last
position as if it were alone: token t of any completion sits at max(prompt positions) + 1 + t
on all three axes. So each completion token attends to exactly the keys, at exactly the
positions, it would see in its own row, and its log-prob is the same; the prompt's states are
computed once and receive the gradient of all G completions, which is what G separate rows
would add up to. The hidden state at the prompt's last position predicts the first token of
every completion.

A row can also hold a subset of a group's completions (a "unit"), so a group too long for one
micro-batch is split, and one completion per row is the unshared layout.

With the vision tower frozen, each prompt's image features are computed once per step without
grad and reused by the reference pass, the old pass and every update pass (the policy's frozen
tower is the reference's: both are the checkpoint's).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dprl.train.sequences import PolicyBatch


@dataclass
class EncodedPrompt:
    """One prompt through the processor: token ids, modality types, pixels and mRoPE positions."""

    input_ids: torch.Tensor  # (P,)
    mm_token_type_ids: torch.Tensor  # (P,) 0 text, 1 image, 2 video
    positions: torch.Tensor  # (3, P) the prompt's own mRoPE positions
    pixel_values: torch.Tensor | None  # (patches, D)
    image_grid_thw: torch.Tensor | None  # (images, 3)

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def next_position(self) -> int:
        """The mRoPE position of the first token after the prompt, on every axis."""
        return int(self.positions.max()) + 1


@dataclass(frozen=True)
class Unit:
    """One row: prompt `prompt` followed by the completions `seqs` (indices into the step's
    sequences, in the order they are laid out)."""

    prompt: int
    seqs: tuple[int, ...]


def encode_prompts(processor, hf_model, prompt_texts: list[str], prompt_images: list[list]) -> list[EncodedPrompt]:
    """Runs the processor once per prompt and computes each prompt's mRoPE positions with the
    model's own rule (`get_rope_index`, which reads no weights)."""
    base = hf_model.model
    out = []
    for text, images in zip(prompt_texts, prompt_images):
        inp = processor(text=[text], images=images or None, return_tensors="pt")
        ids = inp["input_ids"][0]  # (P,)
        types = inp.get("mm_token_type_ids")
        types = torch.zeros_like(ids, dtype=torch.int) if types is None else types[0]  # (P,)
        grid = inp.get("image_grid_thw")
        if grid is not None:
            positions, _ = base.get_rope_index(ids[None], mm_token_type_ids=types[None], image_grid_thw=grid)
            positions = positions[:, 0]  # (3, P)
        else:
            positions = torch.arange(len(ids)).expand(3, -1)  # (3, P) text only: plain positions
        out.append(EncodedPrompt(ids, types, positions.clone(), inp.get("pixel_values"), grid))
    return out


@torch.no_grad()
def image_features(hf_model, prompts: list[EncodedPrompt]) -> list[tuple[torch.Tensor, ...]]:
    """Every prompt's image features (the merger's output, one (tokens, H) tensor per image),
    in one vision call for the whole step -> per prompt, a tuple over its images. Only valid
    while the vision tower is frozen: nothing here keeps a graph."""
    with_images = [p for p in prompts if p.pixel_values is not None]
    if not with_images:
        return [() for _ in prompts]
    pixels = torch.cat([p.pixel_values for p in with_images])  # (sum patches, D)
    grids = torch.cat([p.image_grid_thw for p in with_images])  # (sum images, 3)
    feats = list(hf_model.model.get_image_features(pixels, grids, return_dict=True).pooler_output)
    out = []
    for p in prompts:
        k = 0 if p.image_grid_thw is None else len(p.image_grid_thw)
        out.append(tuple(feats[:k]))
        feats = feats[k:]
    return out


def group_attention_mask(segments: torch.Tensor) -> torch.Tensor:
    """Boolean attention mask (True: may attend) for rows laid out as prompt + completions.

    segments: (R, L) 0 for prompt tokens, j >= 1 for completion j, -1 for padding.
    -> (R, 1, L, L): causal, and a key is visible when it is in the prompt or in the query's own
    segment. Padding queries see earlier padding (never an empty row, so no NaN in softmax) and
    no real query sees padding.
    """
    L = segments.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool).tril()  # (L, L)
    same = segments[:, :, None] == segments[:, None, :]  # (R, L, L)
    prompt_key = (segments == 0)[:, None, :]  # (R, 1, L)
    return (causal & (same | prompt_key))[:, None]  # (R, 1, L, L)


def build_rows(prompts: list[EncodedPrompt], completions: list[list[int]], units: list[Unit],
               pad_token_id: int, token_offsets: torch.Tensor, features=None,
               attn_implementation: str = "sdpa", packed: bool = False) -> PolicyBatch:
    """The rows of `units` as one batch.

    completions: token ids of every sequence of the step; token_offsets: (S + 1,) where each
    sequence's tokens start in the step's flat token order. features: image_features() output,
    or None to pass pixels (the vision tower then runs inside the forward, once per row).
    packed: all rows back to back in one row of their total length, no padding, attended by
    dprl.models.group_attention (the model must run that implementation); otherwise rows are
    right-padded and carry a dense (R, 1, L, L) mask for `attn_implementation` (sdpa / eager).
    The batch's flat token order is row by row, completion by completion; `seq_ids` and
    `token_index` say which step sequence and step token each one is.
    """
    if not units:
        raise ValueError("build_rows needs at least one unit")
    lengths = [prompts[u.prompt].length + sum(len(completions[s]) for s in u.seqs) for u in units]
    R, L = (1, sum(lengths)) if packed else (len(units), max(lengths))
    input_ids = torch.full((R, L), pad_token_id, dtype=torch.long)  # (R, L)
    segments = torch.full((R, L), -1, dtype=torch.long)  # (R, L)
    position_ids = torch.zeros((3, R, L), dtype=torch.long)  # (3, R, L)
    hidden_at, targets, seq_index, seq_ids, token_index = [], [], [], [], []
    prompt_spans, comp_spans, comp_unit = [], [], []  # packed layout: (start, length) per piece
    local = cursor = 0
    for r, u in enumerate(units):
        row, base = (0, cursor) if packed else (r, 0)  # where this unit starts in its row
        p = prompts[u.prompt]
        P = p.length
        input_ids[row, base:base + P] = p.input_ids
        segments[row, base:base + P] = 0
        position_ids[:, row, base:base + P] = p.positions
        prompt_spans.append((base, P))
        start = base + P
        for j, s in enumerate(u.seqs, start=1):
            comp = torch.tensor(completions[s], dtype=torch.long)  # (T,)
            T = len(comp)
            input_ids[row, start:start + T] = comp
            segments[row, start:start + T] = j
            position_ids[:, row, start:start + T] = p.next_position + torch.arange(T)
            # Token 0 is predicted by the prompt's last state, token t > 0 by token t - 1's.
            at = torch.cat([torch.tensor([base + P - 1]), start + torch.arange(T - 1)])  # (T,)
            hidden_at.append(row * L + at)
            targets.append(comp)
            seq_index.append(torch.full((T,), local, dtype=torch.long))
            token_index.append(int(token_offsets[s]) + torch.arange(T))
            seq_ids.append(s)
            comp_spans.append((start, T))
            comp_unit.append(r)
            local += 1
            start += T
        cursor = start
    model_inputs = {"input_ids": input_ids, "position_ids": position_ids}
    if packed:
        from dprl.models.group_attention import GroupLayout

        pi, pv = _span_index(prompt_spans)
        ci, cv = _span_index(comp_spans)
        model_inputs["group_layout"] = GroupLayout(pi, pv, ci, cv, torch.tensor(comp_unit), L)
        model_inputs["attention_mask"] = None  # set per layer type by the caller's model
    else:
        mask = group_attention_mask(segments)  # (R, 1, L, L)
        if attn_implementation == "eager":  # eager attention adds the mask to the scores
            mask = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
        model_inputs["attention_mask"] = mask
    used = [prompts[u.prompt] for u in units]
    if any(p.image_grid_thw is not None for p in used):
        model_inputs["image_grid_thw"] = torch.cat([p.image_grid_thw for p in used if p.image_grid_thw is not None])
        if features is None:
            model_inputs["pixel_values"] = torch.cat([p.pixel_values for p in used if p.pixel_values is not None])
        else:
            from transformers.modeling_outputs import BaseModelOutputWithPooling

            per_image = tuple(f for u in units for f in features[u.prompt])
            model_inputs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=per_image)}
    return PolicyBatch(model_inputs, torch.cat(hidden_at), torch.cat(targets), torch.cat(seq_index), local,
                       seq_ids=torch.tensor(seq_ids, dtype=torch.long), token_index=torch.cat(token_index))


def _span_index(spans: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(start, length) pieces -> (n, max length) positions (0 where padding) and validity."""
    width = max(n for _, n in spans)
    offs = torch.arange(width)  # (W,)
    starts = torch.tensor([a for a, _ in spans])[:, None]  # (n, 1)
    valid = offs[None, :] < torch.tensor([n for _, n in spans])[:, None]  # (n, W)
    return torch.where(valid, starts + offs, 0), valid
