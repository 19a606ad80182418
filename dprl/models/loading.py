"""Loading real checkpoints (Qwen2-VL, Qwen2.5-VL, or the tiny model) from a local directory.

Nothing here downloads: every call passes local_files_only, and a path that is not a directory
with a config.json fails with a message that says so.
"""
from __future__ import annotations

import json
import os

SUPPORTED_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl")

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def check_checkpoint_dir(path: str) -> dict:
    """Returns the checkpoint's config.json, or raises if `path` is not a supported local model."""
    path = os.path.expanduser(path)
    cfg_file = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_file):
        raise FileNotFoundError(
            f"{path!r} is not a local checkpoint directory (no config.json). dprl never downloads "
            "weights: pass the directory of a downloaded Qwen2-VL / Qwen2.5-VL checkpoint, or run "
            "`dprl make-tiny-model DIR` for the offline test model."
        )
    with open(cfg_file) as fh:
        config = json.load(fh)
    if config.get("model_type") not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"{path!r} holds a {config.get('model_type')!r} model; dprl supports {SUPPORTED_MODEL_TYPES}"
        )
    return config


def load_model(path: str, dtype: str = "float32", device: str = "cpu"):
    """The HF vision-language model in `path` (AutoModelForImageTextToText), in eval mode."""
    import torch
    from transformers import AutoModelForImageTextToText

    check_checkpoint_dir(path)
    model = AutoModelForImageTextToText.from_pretrained(
        os.path.expanduser(path), dtype=getattr(torch, _DTYPES[dtype]), local_files_only=True
    )
    return model.to(device).eval()


def load_processor(path: str):
    """The checkpoint's own processor: tokenizer, chat template and image processor."""
    from transformers import AutoProcessor

    check_checkpoint_dir(path)
    return AutoProcessor.from_pretrained(os.path.expanduser(path), local_files_only=True)
