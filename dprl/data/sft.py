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

from dprl.data.released import image_path, is_sharegpt, sharegpt_fields
from dprl.data.validate import (DataError, bad_sample, check_data_file, image_size, prompt_length,
                                read_json_records, read_table)
from dprl.models.chat import prompt_text, user_turn

IGNORE_INDEX = -100  # labels that the cross-entropy skips


@dataclass
class Conversation:
    prompt: str  # the user's text
    response: str  # the assistant's reply (the SFT target)
    image: str | None = None  # an image file, or None for a text-only sample
    sample_id: str = ""
    # The response is the start of a reply, not all of it: no end-of-turn token is learned
    # after it (the knowledge corpus's recall rows: the first sentence of a chain of thought).
    partial: bool = False

    def prompt_messages(self) -> list[dict]:
        """The user's turn in chat format (image first, as in evaluation)."""
        return [user_turn(self.prompt, image=bool(self.image))]


def _read_rows(path: str) -> tuple:
    """(rows, column names) of a .jsonl/.json file (records; a malformed line is named) or of a
    .parquet file (a datasets table)."""
    if not os.path.isfile(path):
        raise DataError(f"data file {path!r} does not exist")
    if path.endswith(".parquet"):
        rows = read_table(path)
        return rows, rows.column_names
    records = read_json_records(path)
    return records, sorted(set().union(*records))


def _text_field(row: dict, name: str) -> str:
    value = row.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"field {name!r} is empty or not text")
    return value


def _row_conversation(row: dict, sid: str, root: str) -> Conversation:
    """A row of dprl's own layout: prompt, response, image."""
    prompt, response = _text_field(row, "prompt"), _text_field(row, "response")
    return Conversation(prompt, response, image_path(_text_field(row, "image"), root), sid)


def _sharegpt_conversation(row: dict, sid: str, root: str) -> Conversation:
    return Conversation(*sharegpt_fields(row, root), sid)


def _sample_id(row: dict, i: int, key: str, prefix: str) -> str:
    return str(row[key]) if row.get(key) is not None else f"{prefix}-{i}"


def _convert(rows, to_conversation, id_field: tuple[str, str], screen, max_samples: int,
             path: str) -> tuple[list[Conversation], list[dict]]:
    """(conversations, samples set aside) from `rows` in file order: `to_conversation(row, sid)`
    and `screen(conv)` raise ValueError/OSError for a sample that cannot be used; at most
    `max_samples` are kept (0: all). A sample is named by its `id_field[0]`, else `id_field[1]-N`."""
    out, bad = [], []
    for i, row in enumerate(rows):
        if max_samples and len(out) >= max_samples:
            break
        sid = _sample_id(row, i, *id_field)
        try:
            conv = to_conversation(row, sid)
            if screen is not None:
                screen(conv)
        except (ValueError, OSError) as err:
            bad.append(bad_sample(sid, str(err)))
            continue
        out.append(conv)
    if not out:
        first = f" ({len(bad)} bad, first: {bad[0]['question_id']}: {bad[0]['error']})" if bad else ""
        raise DataError(f"no usable samples in {path!r}{first}")
    return out, bad


def load_grounding_samples(path: str, image_root: str = "", max_samples: int = 0,
                           screen=None) -> tuple[list[Conversation], list[dict]]:
    """Grounding samples with a chain-of-thought reply, and those set aside as {"question_id",
    "error"}. Two layouts, told apart by their fields: dprl's rows (.jsonl, .json or .parquet) with
    `prompt` (question + format instruction), `response` (`<think>..</think><answer>..</answer>`)
    and `image`; or the released LLaMA-Factory ShareGPT JSON (`messages`, `images`; see
    dprl.data.released). Image paths are relative to `image_root`, by default the file's folder.

    `screen(conv)` raises ValueError/OSError for a sample the run could not encode (see
    `check_encodable`). Samples are kept in file order, the first `max_samples` usable ones (0:
    all); a sample set aside is identified by its question_id, else as row-N (N counted from 0)."""
    rows, columns = _read_rows(path)
    sharegpt = is_sharegpt(columns)
    if not sharegpt:
        missing = [f for f in ("prompt", "response", "image") if f not in columns]
        if missing:
            raise DataError(f"{path!r} lacks the SFT field(s) {missing}; it has {columns} (expected "
                            "prompt/response/image rows, or ShareGPT messages/images records)")
    to_conversation = _sharegpt_conversation if sharegpt else _row_conversation
    root = image_root or os.path.dirname(os.path.abspath(path))
    return _convert(rows, lambda row, sid: to_conversation(row, sid, root), ("question_id", "row"),
                    screen, max_samples, path)


def load_grounding(path: str, image_root: str = "", max_samples: int = 0) -> list[Conversation]:
    """The usable grounding samples of `load_grounding_samples` (no screening)."""
    return load_grounding_samples(path, image_root, max_samples)[0]


def load_knowledge_samples(path: str, screen=None) -> tuple[list[Conversation], list[dict]]:
    """The text-only knowledge corpus (fields `question` and `answer`, no image; a row with
    `partial: true` answers with the start of a reply), and the samples set aside as
    {"question_id", "error"}."""
    rows, columns = _read_rows(path)
    missing = [f for f in ("question", "answer") if f not in columns]
    if missing:
        raise DataError(f"{path!r} lacks the knowledge field(s) {missing}; it has {columns}")
    return _convert(rows, lambda row, sid: Conversation(_text_field(row, "question"),
                                                         _text_field(row, "answer"), None, sid,
                                                         bool(row.get("partial"))),
                    ("id", "kb"), screen, 0, path)


def load_knowledge(path: str) -> list[Conversation]:
    """The usable samples of `load_knowledge_samples` (no screening)."""
    return load_knowledge_samples(path)[0]


def with_picture(question: Conversation, picture_of: Conversation) -> Conversation:
    """A knowledge question asked next to `picture_of`'s picture (the reply does not change)."""
    return Conversation(question.prompt, question.response, picture_of.image,
                        f"{question.sample_id}@{picture_of.sample_id}", question.partial)


def check_encodable(processor, conv: Conversation, max_length: int) -> None:
    """Raises ValueError for a sample `encode` could not turn into a training row: an image that
    does not decode or that Qwen2-VL cannot resize, or a prompt (image expanded) that alone
    reaches `max_length`. Decodes the image once and tokenises the text; no pixels are processed."""
    sizes = [image_size(conv.image)] if conv.image else []
    P = prompt_length(processor, prompt_text(processor, conv.prompt_messages()), sizes)
    if P >= max_length:
        raise ValueError(f"its prompt is {P} tokens (image included) and data.max_length is "
                         f"{max_length}, which leaves no room for the reply; raise data.max_length")


def load_sft_data(cfg, processor) -> tuple[list[Conversation], list[Conversation], list[dict]]:
    """(grounding samples, knowledge samples, samples set aside) for an SFTDataConfig, each sample
    screened with `check_encodable`, so every one the run draws encodes. Deterministic: every rank
    keeps the same samples in the same order."""
    def screen(conv):
        check_encodable(processor, conv, cfg.max_length)

    grounding, bad = load_grounding_samples(cfg.train_path, cfg.image_root, cfg.max_samples, screen)
    knowledge = []
    if cfg.knowledge_path and cfg.knowledge_per_batch:
        knowledge, bad_kb = load_knowledge_samples(cfg.knowledge_path, screen)
        bad = bad + bad_kb
    return grounding, knowledge, bad


def check_data_files(cfg) -> None:
    """Fails naming the key, before anything loads, when a file an SFTDataConfig uses is missing."""
    check_data_file(cfg.train_path, "data.train_path")
    if cfg.knowledge_path and cfg.knowledge_per_batch:
        check_data_file(cfg.knowledge_path, "data.knowledge_path")


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
    text = prompt_text(processor, conv.prompt_messages())
    inputs = processor(text=[text], images=images or None, return_tensors="pt")
    prompt_ids = inputs["input_ids"][0]  # (P,)
    tok = processor.tokenizer
    reply = tok(conv.response, add_special_tokens=False)["input_ids"]
    if not conv.partial:
        reply.append(tok.convert_tokens_to_ids("<|im_end|>"))
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
