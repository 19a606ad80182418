"""Chat messages -> the prompt text a checkpoint sees: the one place the chat template is applied.

SFT encodes its samples, GRPO and evaluation build their requests, and both rollout backends feed
their models through `prompt_text`, so every stage asks in exactly the same tokens.
"""
from __future__ import annotations


def user_turn(text: str, image: bool = True) -> dict:
    """One user message in HF chat format: the image slot first (when there is one), then the
    text, the layout DeepPerception's data and KVG-Bench use."""
    content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]
    return {"role": "user", "content": content}


def prompt_text(processor, messages: list[dict]) -> str:
    """The checkpoint's chat template applied to `messages`, with the assistant turn opened.
    Each image slot becomes one <|image_pad|>; the processor or engine expands it to the image's
    patch count."""
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
