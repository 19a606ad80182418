"""The tiny offline Qwen2-VL / Qwen2.5-VL: a randomly initialised checkpoint in standard HF format.

It has the real architecture (vision tower, merger, mRoPE language model) at toy sizes, so every
code path that a 7B checkpoint takes runs in seconds on a CPU, with no download. The directory
holds config.json, model.safetensors, the tokenizer with Qwen2-VL's special tokens and chat
template, and the image/video processor configs; transformers and vLLM both load it.
"""
from __future__ import annotations

import os

from dprl.config import TinyModelConfig
from dprl.models.tokenizer import build_tokenizer


def mrope_section(head_dim: int) -> list[int]:
    """Split of the rotary half-dimension into (temporal, height, width) sections.

    Same proportions as Qwen2-VL-7B ([16, 24, 24] for head_dim 128).
    """
    half = head_dim // 2
    t = head_dim // 8
    h = (half - t) // 2
    return [t, h, half - t - h]


def _model_config(cfg: TinyModelConfig, tokenizer):
    """The HF config object for `cfg.arch`, with the tokenizer's special-token ids."""
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

    head_dim = cfg.hidden_size // cfg.num_heads
    ids = tokenizer.convert_tokens_to_ids
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": float(cfg.rope_theta),
                         "mrope_section": mrope_section(head_dim)},
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|im_end|>"),
        pad_token_id=ids("<|endoftext|>"),
    )
    special = dict(
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    if cfg.arch == "qwen2_vl":
        vision = dict(
            depth=cfg.vision_depth,
            embed_dim=cfg.vision_embed_dim,
            hidden_size=cfg.hidden_size,  # output of the merger = the LM's width
            num_heads=cfg.vision_num_heads,
            mlp_ratio=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        )
        return Qwen2VLConfig(text_config=text, vision_config=vision, **special)
    vision = dict(
        depth=cfg.vision_depth,
        hidden_size=cfg.vision_embed_dim,
        intermediate_size=2 * cfg.vision_embed_dim,
        num_heads=cfg.vision_num_heads,
        out_hidden_size=cfg.hidden_size,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=56,  # 2x2 merged patches per window: tiny images still use windowing
        fullatt_block_indexes=[cfg.vision_depth - 1],
    )
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **special)


def build_processor(cfg: TinyModelConfig, tokenizer):
    """Qwen2-VL's processor (image + video processors, tokenizer, chat template) at tiny sizes."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    size = {"shortest_edge": cfg.min_pixels, "longest_edge": cfg.max_pixels}
    common = dict(size=size, patch_size=14, merge_size=2, temporal_patch_size=2,
                  image_mean=list(cfg.image_mean), image_std=list(cfg.image_std))
    image_processor = Qwen2VLImageProcessor(**common)
    video_processor = Qwen2VLVideoProcessor(**common)
    cls = Qwen2VLProcessor if cfg.arch == "qwen2_vl" else Qwen2_5_VLProcessor
    return cls(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
               chat_template=tokenizer.chat_template)


def make_tiny_model(out_dir: str, cfg: TinyModelConfig | None = None) -> str:
    """Writes a randomly initialised tiny checkpoint to `out_dir` and returns the path.

    Deterministic: the same `cfg` (seed included) gives byte-identical weights.
    """
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration

    cfg = cfg or TinyModelConfig()
    cfg.check("tiny.")  # raises ConfigError before anything is written
    tokenizer = build_tokenizer(cfg.vocab_size)
    config = _model_config(cfg, tokenizer)
    model_cls = Qwen2VLForConditionalGeneration if cfg.arch == "qwen2_vl" else Qwen2_5_VLForConditionalGeneration

    # Initialise on CPU under a private generator state so the weights depend on the seed alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = model_cls(config).to(torch.float32).eval()
    os.makedirs(out_dir, exist_ok=True)
    model.generation_config.do_sample = True
    model.generation_config.temperature = 1.0
    model.save_pretrained(out_dir, safe_serialization=True)
    build_processor(cfg, tokenizer).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def count_parameters(model) -> dict[str, int]:
    """Parameters by part: vision tower (incl. merger), language model, lm_head."""
    parts = {"vision": 0, "language_model": 0, "lm_head": 0}
    for name, p in model.named_parameters():
        key = "vision" if ".visual." in f".{name}" else "lm_head" if name.startswith("lm_head") else "language_model"
        parts[key] += p.numel()
    parts["total"] = sum(parts.values())
    return parts
