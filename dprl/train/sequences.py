"""Prompt + sampled completion -> one padded multimodal batch for the trainer's forward pass.

Each prompt is run through the model's own processor once (images -> patches, one <|image_pad|>
expanded to the image's token count), and each of its G completions is appended to a copy of the
prompt ids. Sequences are right-padded; Qwen2-VL's mRoPE positions are computed by the model from
the attention mask and image grids, per sequence, so padding never shifts them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PolicyBatch:
    """Everything a forward pass needs, plus where the completion tokens are.

    Token t of completion s is predicted by the hidden state at position prompt_len[s] - 1 + t.
    """

    model_inputs: dict  # input_ids (S, L), attention_mask (S, L), pixel_values, image_grid_thw, ...
    positions: torch.Tensor  # (N,) flat index into (S * L) of the states that predict each token
    targets: torch.Tensor  # (N,) completion token ids
    seq_index: torch.Tensor  # (N,) which sequence each token belongs to
    num_seqs: int
    # Where this batch sits in a larger one (a step's micro-batch): the step's index of each of
    # its sequences (S,) and of each of its tokens (N,). None: the batch is the whole step.
    seq_ids: torch.Tensor | None = None
    token_index: torch.Tensor | None = None

    def completion_lengths(self) -> torch.Tensor:
        return torch.bincount(self.seq_index, minlength=self.num_seqs)  # (S,)


def _prompt_inputs(processor, prompt_text: str, images: list) -> dict:
    out = processor(text=[prompt_text], images=images or None, return_tensors="pt")
    return {k: v for k, v in out.items()}


def build_policy_batch(processor, prompt_texts: list[str], prompt_images: list[list],
                       completions: list[tuple[int, list[int]]], pad_token_id: int) -> PolicyBatch:
    """completions: (prompt index, completion token ids) per sequence, in the order the loss
    wants them (for GRPO: the G completions of each prompt adjacent)."""
    if not completions:
        raise ValueError("build_policy_batch needs at least one completion")
    cache: dict[int, dict] = {}
    for p, _ in completions:
        if p not in cache:
            cache[p] = _prompt_inputs(processor, prompt_texts[p], prompt_images[p])
    rows, types, pixels, grids = [], [], [], []
    for p, ids in completions:
        inp = cache[p]
        comp = torch.tensor(ids, dtype=torch.long)  # (T,)
        rows.append((inp["input_ids"][0], comp))
        if "mm_token_type_ids" in inp:  # the processor's per-token modality; completions are text
            types.append(torch.cat([inp["mm_token_type_ids"][0], torch.zeros_like(comp)]))
        if "pixel_values" in inp:
            pixels.append(inp["pixel_values"])  # (patches, C * P * P * T)
            grids.append(inp["image_grid_thw"])  # (images, 3)
    S = len(rows)
    L = max(len(a) + len(b) for a, b in rows)
    input_ids = torch.full((S, L), pad_token_id, dtype=torch.long)  # (S, L)
    attention = torch.zeros((S, L), dtype=torch.long)  # (S, L)
    positions, targets, seq_index = [], [], []
    for s, (prompt, comp) in enumerate(rows):
        P, T = len(prompt), len(comp)
        input_ids[s, :P] = prompt
        input_ids[s, P:P + T] = comp
        attention[s, :P + T] = 1
        positions.append(s * L + P - 1 + torch.arange(T))  # (T,)
        targets.append(comp)
        seq_index.append(torch.full((T,), s, dtype=torch.long))
    model_inputs = {"input_ids": input_ids, "attention_mask": attention}
    if types:
        mm = torch.zeros((S, L), dtype=types[0].dtype)  # (S, L)
        for s, t in enumerate(types):
            mm[s, :len(t)] = t
        model_inputs["mm_token_type_ids"] = mm
    if pixels:
        model_inputs["pixel_values"] = torch.cat(pixels)  # (sum patches, D)
        model_inputs["image_grid_thw"] = torch.cat(grids)  # (sum images, 3)
    return PolicyBatch(model_inputs, torch.cat(positions), torch.cat(targets), torch.cat(seq_index), S)
