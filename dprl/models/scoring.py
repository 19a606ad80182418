"""Scoring fixed completions with the HF model: the trainer-side log-probs of sampled tokens."""
from __future__ import annotations

import torch

from dprl.kernels import selective_logprob


@torch.no_grad()
def completion_logprobs(model, processor, prompt_text: str, images: list, completion_ids: list[int],
                        temperature: float = 1.0, banned_token_ids: list[int] = ()) -> torch.Tensor:
    """fp32 log p(completion token | prefix) under softmax(logits / temperature) -> [T].

    `prompt_text` is the chat-templated prompt with one <|image_pad|> per image (the processor
    expands it to the image's patch count). Tokens in `banned_token_ids` are masked out of the
    softmax, as the sampler masked them when the completion was drawn.
    """
    inputs = processor(text=[prompt_text], images=images or None, return_tensors="pt")
    prompt_ids = inputs["input_ids"]  # (1, P)
    comp = torch.tensor([completion_ids], dtype=prompt_ids.dtype)  # (1, T)
    input_ids = torch.cat([prompt_ids, comp], dim=1)  # (1, P + T)
    extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    if "mm_token_type_ids" in extra:  # per-token modality of the prompt; completions are text (0)
        types = extra["mm_token_type_ids"]  # (1, P)
        extra["mm_token_type_ids"] = torch.cat([types, types.new_zeros(comp.shape)], dim=1)  # (1, P + T)
    out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **extra)
    P, T = prompt_ids.shape[1], comp.shape[1]
    logits = out.logits[0, P - 1:P - 1 + T].float()  # (T, V): position t predicts token t + 1
    if len(banned_token_ids):
        logits[:, list(banned_token_ids)] = float("-inf")
    return selective_logprob(logits, comp[0], temperature)  # (T,)
