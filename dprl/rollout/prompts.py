"""Chat messages -> the prompt text both backends feed their models."""
from __future__ import annotations

from dprl.rollout.base import RolloutRequest


def prompt_text(processor, request: RolloutRequest) -> str:
    """The checkpoint's chat template applied to the messages, with the assistant turn opened.
    Each image slot becomes one <|image_pad|>; the processor or engine expands it to the image's
    patch count."""
    return processor.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
