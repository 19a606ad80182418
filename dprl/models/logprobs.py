"""Log-probs of fixed completions under the HF model: the trainer-side view of sampled tokens."""
from __future__ import annotations

import torch

from dprl.kernels import selective_logprob


def truncate_logits(logits: torch.Tensor, top_k: int = -1, top_p: float = 1.0) -> torch.Tensor:
    """Masks (to -inf) what top-k then top-p sampling would never draw. logits: [T, V] fp32.

    Same rule as the sampler: keep the k largest logits, then the smallest set of the largest
    whose probability reaches top_p (always at least one token).
    """
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (T, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1)  # (T, V) ascending
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # (T, V)
        drop_sorted = cum <= 1 - top_p  # (T, V)
        drop_sorted[:, -1] = False  # the most likely token always stays
        drop = drop_sorted.scatter(1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def completion_inputs(processor, prompt_text: str, images: list, completion_ids: list[int]) -> tuple[dict, int]:
    """Model inputs for prompt + completion -> (inputs, P), P the expanded prompt length.

    `prompt_text` is the chat-templated prompt with one <|image_pad|> per image (the processor
    expands it to the image's patch count); the completion follows it as text tokens.
    """
    inputs = processor(text=[prompt_text], images=images or None, return_tensors="pt")
    prompt_ids = inputs["input_ids"]  # (1, P)
    comp = torch.tensor([completion_ids], dtype=prompt_ids.dtype)  # (1, T)
    input_ids = torch.cat([prompt_ids, comp], dim=1)  # (1, P + T)
    extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    if "mm_token_type_ids" in extra:  # per-token modality of the prompt; completions are text (0)
        types = extra["mm_token_type_ids"]  # (1, P)
        extra["mm_token_type_ids"] = torch.cat([types, types.new_zeros(comp.shape)], dim=1)  # (1, P + T)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), **extra}, prompt_ids.shape[1]


@torch.no_grad()
def completion_logprobs(model, processor, prompt_text: str, images: list, completion_ids: list[int],
                        temperature: float = 1.0, banned_token_ids: list[int] = (),
                        top_k: int = -1, top_p: float = 1.0) -> torch.Tensor:
    """fp32 log p(completion token | prefix) under the sampling distribution -> [T].

    The distribution is softmax(logits / temperature) with `banned_token_ids` masked and top-k /
    top-p applied, as the sampler drew the tokens. `prompt_text` is the chat-templated prompt
    with one <|image_pad|> per image (the processor expands it to the image's patch count).
    """
    inputs, P = completion_inputs(processor, prompt_text, images, completion_ids)
    device = next(model.parameters()).device
    out = model(**{k: v.to(device) for k, v in inputs.items()})
    T = len(completion_ids)
    logits = out.logits[0, P - 1:P - 1 + T].float()  # (T, V): position t predicts token t + 1
    if len(banned_token_ids):
        logits[:, list(banned_token_ids)] = float("-inf")
    logits = truncate_logits(logits / temperature, top_k, top_p)  # (T, V)
    targets = inputs["input_ids"][0, P:].to(logits.device)  # (T,)
    return selective_logprob(logits, targets)  # (T,)
