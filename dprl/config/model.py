"""Which checkpoint a stage runs: a local Hugging Face directory, or the tiny offline model."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from dprl.config.loader import require


VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------
@dataclass
class TinyModelConfig:
    """Size knobs of the randomly initialised offline model (`dprl make-tiny-model`)."""

    arch: Literal["qwen2_vl", "qwen2_5_vl"] = "qwen2_vl"
    seed: int = 0
    vocab_size: int = 1024  # BPE merges stop here; the special tokens come on top
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4  # head_dim = hidden_size / num_heads must be one vLLM's CPU attention has
    num_kv_heads: int = 2
    intermediate_size: int = 384
    vision_depth: int = 2
    vision_embed_dim: int = 64
    vision_num_heads: int = 4
    max_position_embeddings: int = 4096
    # The language model's rotary base. mRoPE gives the width axis the lowest frequencies; with
    # head_dim 32 and Qwen2-VL's 1e6 they barely turn across a tiny image's few columns.
    rope_theta: float = 1000000.0
    # Images are resized to at most this many pixels, so a picture costs a handful of tokens
    # (one merged 28x28 patch each) instead of hundreds.
    max_pixels: int = 112 * 112
    min_pixels: int = 56 * 56
    # The processor's pixel normalisation (per RGB channel, on 0-1 values). Qwen2-VL's (CLIP's)
    # numbers centre natural photos; the embedded world's pale scenes would sit ~1.3 std above
    # them, so every patch would carry one large shared component that a randomly initialised
    # vision tower passes on (vision tokens ~0.93 cosine-alike) and the language model learns to
    # ignore the picture. These are the world's own pixel statistics, which centre the background
    # on zero (one entity per picture, grounded from its look, 800 steps: 10% Acc@0.5 with CLIP's
    # numbers, 75% with these). A real checkpoint keeps the numbers it was trained with.
    image_mean: list[float] = field(default_factory=lambda: [0.85, 0.84, 0.82])
    image_std: list[float] = field(default_factory=lambda: [0.19, 0.19, 0.23])

    def check(self, key: str) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads",
                     "intermediate_size", "vision_depth", "vision_embed_dim", "vision_num_heads",
                     "max_position_embeddings", "max_pixels", "min_pixels"):
            v = getattr(self, name)
            require(v > 0, f"{key}{name}", "a positive integer", v)
        require(self.rope_theta > 1.0, f"{key}rope_theta", "a rotary base > 1", self.rope_theta)
        require(self.vocab_size >= 300, f"{key}vocab_size",
                 "at least 300 (256 byte tokens plus room for merges)", self.vocab_size)
        require(self.hidden_size % self.num_heads == 0, f"{key}hidden_size",
                 f"a multiple of num_heads={self.num_heads}", self.hidden_size)
        head_dim = self.hidden_size // self.num_heads
        require(head_dim in VLLM_CPU_HEAD_SIZES, f"{key}hidden_size",
                 f"hidden_size / num_heads in {VLLM_CPU_HEAD_SIZES} (the head sizes vLLM's CPU "
                 f"attention has); with num_heads={self.num_heads} that is {head_dim}", self.hidden_size)
        require(self.num_heads % self.num_kv_heads == 0, f"{key}num_kv_heads",
                 f"a divisor of num_heads={self.num_heads}", self.num_kv_heads)
        require(self.vision_embed_dim % self.vision_num_heads == 0, f"{key}vision_embed_dim",
                 f"a multiple of vision_num_heads={self.vision_num_heads}", self.vision_embed_dim)
        require(self.min_pixels <= self.max_pixels, f"{key}min_pixels",
                 f"at most max_pixels={self.max_pixels}", self.min_pixels)
        require(self.min_pixels >= 28 * 28, f"{key}min_pixels",
                 "at least 784 (one 28x28 merged patch)", self.min_pixels)
        for name in ("image_mean", "image_std"):
            v = getattr(self, name)
            require(isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v),
                     f"{key}{name}", "three numbers (R, G, B) on the 0-1 pixel scale", v)
        require(all(x > 0 for x in self.image_std), f"{key}image_std", "positive numbers", self.image_std)


@dataclass
class ModelConfig:
    """Which checkpoint to run. `path` is a local HF checkpoint directory (Qwen2-VL or
    Qwen2.5-VL); when it is empty, the tiny offline model described by `tiny` is built into the
    run directory, so a fresh machine needs no download."""

    path: str = ""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)

    def check(self, key: str) -> None:
        if self.path:
            path = os.path.expanduser(self.path)
            require(os.path.isdir(path), f"{key}path",
                     "an existing local checkpoint directory (nothing is downloaded)", self.path)
            # Found here rather than after minutes of setup: a folder of shards without the
            # config is a partial copy, or the parent of the checkpoint.
            require(os.path.isfile(os.path.join(path, "config.json")), f"{key}path",
                     "a Hugging Face checkpoint directory holding config.json (a downloaded "
                     "Qwen2-VL / Qwen2.5-VL, or the final/ folder a dprl run writes)", self.path)
