"""Supervised fine-tuning data: conversations -> token ids, labels and pixels, then batches.

A sample is one user turn (optional image(s) + text) and the assistant's reply. The prompt goes
through the checkpoint's own chat template and processor (which expands each <|image_pad|> to the
image's patch count); the reply is tokenised on its own and appended, then <|im_end|>. That is
exactly the token sequence the model sees when it generates the reply after the same prompt, and
the loss covers only the reply and its <|im_end|> (labels are -100 on every prompt token).

Batches are right-padded, not packed: Qwen2-VL's mRoPE positions (3 x T, images on a 2-D grid)
are computed by the model per row from `mm_token_type_ids`, `image_grid_thw` and the attention
mask, so each row keeps the positions it has alone (tests/train/test_sft_data.py proves it).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

IGNORE_INDEX = -100  # labels that the cross-entropy skips


@dataclass
class Conversation:
    prompt: str  # the user's text
    response: str  # the assistant's reply (the SFT target)
    image: str | None = None  # an image file, or None for a text-only sample
    sample_id: str = ""


def _load_rows(path: str):
    """The file as a `datasets.Dataset` (JSONL/JSON or parquet)."""
    from datasets import load_dataset

    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file {path!r} does not exist")
    kind = "parquet" if path.endswith(".parquet") else "json"
    return load_dataset(kind, data_files={"train": path}, split="train")


def load_grounding(path: str, image_root: str = "", max_samples: int = 0) -> list[Conversation]:
    """Grounding samples with a chain-of-thought reply: fields `prompt` (question + format
    instruction), `response` (`<think>..</think><answer>..</answer>`) and `image` (a path relative
    to `image_root`, by default the file's folder)."""
    rows = _load_rows(path)
    missing = [f for f in ("prompt", "response", "image") if f not in rows.column_names]
    if missing:
        raise ValueError(f"{path!r} lacks the SFT field(s) {missing}; it has {rows.column_names}")
    root = image_root or os.path.dirname(os.path.abspath(path))
    out = []
    for i, row in enumerate(rows):
        if max_samples and len(out) >= max_samples:
            break
        sid = str(row.get("question_id") or f"row-{i}")
        for name in ("prompt", "response", "image"):
            if not isinstance(row[name], str) or not row[name].strip():
                raise ValueError(f"{path!r} sample {sid}: field {name!r} is empty or not text")
        image = row["image"] if os.path.isabs(row["image"]) else os.path.join(root, row["image"])
        if not os.path.isfile(image):
            raise FileNotFoundError(f"{path!r} sample {sid}: image {image!r} does not exist")
        out.append(Conversation(row["prompt"], row["response"], image, sid))
    if not out:
        raise ValueError(f"no samples in {path!r}")
    return out


def load_knowledge(path: str) -> list[Conversation]:
    """The text-only knowledge corpus: fields `question` and `answer` (no image)."""
    rows = _load_rows(path)
    missing = [f for f in ("question", "answer") if f not in rows.column_names]
    if missing:
        raise ValueError(f"{path!r} lacks the knowledge field(s) {missing}; it has {rows.column_names}")
    out = [Conversation(r["question"], r["answer"], None, str(r.get("id") or f"kb-{i}"))
           for i, r in enumerate(rows)]
    if not out:
        raise ValueError(f"no samples in {path!r}")
    return out


def prompt_text(processor, conv: Conversation) -> str:
    """The chat-templated prompt up to the assistant's turn (image first, as in evaluation)."""
    content = ([{"type": "image"}] if conv.image else []) + [{"type": "text", "text": conv.prompt}]
    messages = [{"role": "user", "content": content}]
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode(processor, conv: Conversation, max_length: int) -> dict:
    """One sample as tensors: input_ids, labels, mm_token_type_ids (L,); pixel_values
    (patches, patch_dim) and image_grid_thw (images, 3) when it has an image.

    Replies longer than `max_length` are cut at the end (the loss then misses the tail); a
    prompt that alone reaches `max_length` is an error, since nothing would be learned from it.
    """
    from PIL import Image

    images = []
    if conv.image:
        with Image.open(conv.image) as im:
            images = [im.convert("RGB")]
    inputs = processor(text=[prompt_text(processor, conv)], images=images or None, return_tensors="pt")
    prompt_ids = inputs["input_ids"][0]  # (P,)
    tok = processor.tokenizer
    reply = tok(conv.response, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
    reply_ids = torch.tensor(reply, dtype=prompt_ids.dtype)  # (R,)
    P = prompt_ids.numel()
    if P >= max_length:
        raise ValueError(f"sample {conv.sample_id}: its prompt alone is {P} tokens, max_length is "
                         f"{max_length}; raise data.max_length")
    input_ids = torch.cat([prompt_ids, reply_ids])[:max_length]  # (L,)
    labels = input_ids.clone()
    labels[:P] = IGNORE_INDEX
    types = inputs.get("mm_token_type_ids")
    types = types[0] if types is not None else torch.zeros(P, dtype=torch.long)  # (P,)
    mm_types = torch.cat([types, types.new_zeros(reply_ids.numel())])[:max_length]  # (L,)
    out = {"input_ids": input_ids, "labels": labels, "mm_token_type_ids": mm_types}
    if images:
        out["pixel_values"] = inputs["pixel_values"]  # (patches, patch_dim)
        out["image_grid_thw"] = inputs["image_grid_thw"]  # (1, 3)
    return out


def collate(samples: list[dict], pad_id: int) -> dict:
    """Right-pads encoded samples into one batch: input_ids, labels, attention_mask and
    mm_token_type_ids (B, T); pixel_values and image_grid_thw concatenated in row order (the
    order the model assigns image features to <|image_pad|> runs)."""
    T = max(s["input_ids"].numel() for s in samples)
    B = len(samples)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)  # (B, T)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((B, T), dtype=torch.long)  # (B, T)
    mm_types = torch.zeros((B, T), dtype=torch.long)  # (B, T)
    for b, s in enumerate(samples):
        L = s["input_ids"].numel()
        input_ids[b, :L] = s["input_ids"]
        labels[b, :L] = s["labels"]
        attention_mask[b, :L] = 1
        mm_types[b, :L] = s["mm_token_type_ids"]
    batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask,
             "mm_token_type_ids": mm_types}
    with_images = [s for s in samples if "pixel_values" in s]
    if with_images:
        batch["pixel_values"] = torch.cat([s["pixel_values"] for s in with_images])  # (patches, D)
        batch["image_grid_thw"] = torch.cat([s["image_grid_thw"] for s in with_images])  # (images, 3)
    return batch
