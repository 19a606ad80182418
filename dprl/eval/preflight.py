"""Cheap per-sample checks before generation, so one bad sample cannot abort a whole evaluation.

vLLM rejects a whole batch when one prompt is longer than max_model_len, and Qwen2-VL's image
processor raises for an image whose aspect ratio exceeds 200 (`smart_resize`). Both are found
here from the image size and the tokenized prompt text, without running the image processor.
"""
from __future__ import annotations

from dprl.data.validate import prompt_length
from dprl.models.chat import prompt_text


def prompt_tokens(processor, messages: list[dict], images: list) -> int:
    """Prompt length as the engine sees it: the chat template's tokens with each image slot
    expanded to the image's tokens (raises ValueError for an image the processor refuses)."""
    text = prompt_text(processor, messages)
    return prompt_length(processor, text, [(im.width, im.height) for im in images])


def check_sample(processor, messages: list[dict], images: list, new_tokens: int,
                 max_model_len: int) -> str | None:
    """None when the prompt and `new_tokens` generated tokens fit `max_model_len`; else why not."""
    try:
        n = prompt_tokens(processor, messages, images)
    except ValueError as err:
        sizes = ", ".join(f"{im.width}x{im.height}" for im in images)
        return f"image {sizes}: {err}"
    if n + new_tokens > max_model_len:
        return (f"prompt is {n} tokens; with {new_tokens} new tokens it needs rollout.max_model_len "
                f">= {n + new_tokens} (now {max_model_len}); raise it or lower rollout.max_tokens")
    return None
