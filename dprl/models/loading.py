"""Loading real checkpoints (Qwen2-VL, Qwen2.5-VL, or the tiny model) from a local directory.

Nothing here downloads: every call passes local_files_only, and a path that is not a directory
with a config.json fails with a message that says so. `resolve_checkpoint` is how every stage
turns its `path` setting into a directory: the checkpoint given, or the tiny offline model built
into the stage's run directory.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict

SUPPORTED_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl")

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}

TINY_MODEL_DIR = "tiny-model"  # where a stage without a checkpoint builds the tiny model
TINY_RECORD = "tiny_config.json"  # the TinyModelConfig the folder was built from


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


def tiny_model_dir(run_dir: str) -> str:
    """Where a stage that runs in `run_dir` keeps the tiny model it builds."""
    return os.path.join(run_dir, TINY_MODEL_DIR)


def resolve_checkpoint(path: str, tiny, run_dir: str) -> str:
    """The checkpoint a stage runs: `path` when it is set (a local directory, `~` expanded), else
    the tiny offline model for `tiny` (a TinyModelConfig) in <run_dir>/tiny-model.

    The tiny model is a deterministic function of its config, which is recorded beside it: it is
    built when the folder lacks it or holds another config's, and reused otherwise. Under
    torch.distributed rank 0 builds it while the other ranks wait (all ranks call this)."""
    if path:
        return os.path.expanduser(path)
    import torch

    out = tiny_model_dir(run_dir)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not distributed or torch.distributed.get_rank() == 0:
        _build_tiny_unless_current(out, tiny)
    if distributed:
        torch.distributed.barrier()
    return out


def _build_tiny_unless_current(out: str, tiny) -> None:
    from dprl.models.tiny import make_tiny_model

    record = os.path.join(out, TINY_RECORD)
    wanted = json.dumps(asdict(tiny), sort_keys=True)
    built = None
    if os.path.isfile(record):
        with open(record) as fh:
            built = fh.read()
    if built == wanted and os.path.isfile(os.path.join(out, "model.safetensors")):
        return
    if built is not None:
        os.remove(record)  # the folder holds no finished build until the new record is written
    make_tiny_model(out, tiny)
    with open(record, "w") as fh:
        fh.write(wanted)
