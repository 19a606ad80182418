"""Configuration: dataclasses are the single source of truth, YAML and `key=value` fill them.

Loading is strict so that a bad config fails before any work starts: an unknown key, a value of
the wrong type or an impossible value raises `ConfigError` naming the dotted key and what was
expected. Each section validates its own values in `check()`.
"""
from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A config value is unknown, of the wrong type or impossible; the message names the key."""


def _require(ok: bool, key: str, expected: str, got: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}: expected {expected}, got {got!r}")


# vLLM's CPU attention kernel only has these head sizes (vllm/v1/attention/backends/cpu_attn.py).
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
            _require(v > 0, f"{key}{name}", "a positive integer", v)
        _require(self.rope_theta > 1.0, f"{key}rope_theta", "a rotary base > 1", self.rope_theta)
        _require(self.vocab_size >= 300, f"{key}vocab_size",
                 "at least 300 (256 byte tokens plus room for merges)", self.vocab_size)
        _require(self.hidden_size % self.num_heads == 0, f"{key}hidden_size",
                 f"a multiple of num_heads={self.num_heads}", self.hidden_size)
        head_dim = self.hidden_size // self.num_heads
        _require(head_dim in VLLM_CPU_HEAD_SIZES, f"{key}hidden_size",
                 f"hidden_size / num_heads in {VLLM_CPU_HEAD_SIZES} (the head sizes vLLM's CPU "
                 f"attention has); with num_heads={self.num_heads} that is {head_dim}", self.hidden_size)
        _require(self.num_heads % self.num_kv_heads == 0, f"{key}num_kv_heads",
                 f"a divisor of num_heads={self.num_heads}", self.num_kv_heads)
        _require(self.vision_embed_dim % self.vision_num_heads == 0, f"{key}vision_embed_dim",
                 f"a multiple of vision_num_heads={self.vision_num_heads}", self.vision_embed_dim)
        _require(self.min_pixels <= self.max_pixels, f"{key}min_pixels",
                 f"at most max_pixels={self.max_pixels}", self.min_pixels)
        _require(self.min_pixels >= 28 * 28, f"{key}min_pixels",
                 "at least 784 (one 28x28 merged patch)", self.min_pixels)
        for name in ("image_mean", "image_std"):
            v = getattr(self, name)
            _require(isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v),
                     f"{key}{name}", "three numbers (R, G, B) on the 0-1 pixel scale", v)
        _require(all(x > 0 for x in self.image_std), f"{key}image_std", "positive numbers", self.image_std)


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
            _require(os.path.isdir(path), f"{key}path",
                     "an existing local checkpoint directory (nothing is downloaded)", self.path)
            # Found here rather than after minutes of setup: a folder of shards without the
            # config is a partial copy, or the parent of the checkpoint.
            _require(os.path.isfile(os.path.join(path, "config.json")), f"{key}path",
                     "a Hugging Face checkpoint directory holding config.json (a downloaded "
                     "Qwen2-VL / Qwen2.5-VL, or the final/ folder a dprl run writes)", self.path)


@dataclass
class RolloutConfig:
    """How completions are sampled (vLLM in-process)."""

    n: int = 4  # completions per prompt (the GRPO group size)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # -1: no top-k cut
    max_tokens: int = 32
    seed: int = 0
    kv_cache_gib: int = 1  # vLLM's CPU KV-cache size in whole GiB (VLLM_CPU_KVCACHE_SPACE)
    max_model_len: int = 2048
    stop: list[str] = field(default_factory=list)  # extra stop strings (EOS always stops)
    backend: Literal["vllm", "hf"] = "vllm"  # hf: transformers generate, the slow baseline
    # GPU only: build vLLM with sleep mode so sleep() frees the KV cache while training runs.
    # vLLM's CPU backend has no sleep mode; there sleep()/wake_up() are no-ops.
    sleep_mode: bool = True
    gpu_memory_utilization: float = 0.5  # GPU only: the engine's share, the rest is training's
    # Return each sampled token's log-prob. Greedy decoding (temperature 0, for evaluation) has
    # no sampling distribution, so it needs logprobs: false.
    logprobs: bool = True
    # vLLM without CUDA graphs / torch.compile. false lets vLLM capture graphs (GPU) or compile
    # (CPU: inductor, minutes of compiling per engine start on a small machine) for faster decoding.
    enforce_eager: bool = True

    def check(self, key: str) -> None:
        _require(self.n >= 1, f"{key}n", "at least 1", self.n)
        if self.logprobs:
            _require(self.temperature > 0, f"{key}temperature",
                     "a positive number while logprobs is true (greedy decoding has no log-probs "
                     "to compare; set logprobs: false for temperature 0)", self.temperature)
        else:
            _require(self.temperature >= 0, f"{key}temperature", "0 (greedy) or a positive number",
                     self.temperature)
        _require(0 < self.top_p <= 1, f"{key}top_p", "a number in (0, 1]", self.top_p)
        _require(self.top_k == -1 or self.top_k >= 1, f"{key}top_k", "-1 or a positive integer",
                 self.top_k)
        _require(self.max_tokens >= 1, f"{key}max_tokens", "at least 1", self.max_tokens)
        _require(self.kv_cache_gib > 0, f"{key}kv_cache_gib", "a positive whole number of GiB",
                 self.kv_cache_gib)
        _require(self.max_model_len > self.max_tokens, f"{key}max_model_len",
                 f"more than max_tokens={self.max_tokens}", self.max_model_len)
        _require(all(isinstance(t, str) and t for t in self.stop), f"{key}stop",
                 "a list of non-empty strings", self.stop)
        _require(0 < self.gpu_memory_utilization < 1, f"{key}gpu_memory_utilization",
                 "a fraction in (0, 1)", self.gpu_memory_utilization)


@dataclass
class SmokeConfig:
    """`dprl smoke`: the whole stack end to end. Build (or load) the model, sample completions
    for image+text prompts with vLLM, score the same tokens with transformers, and check that the
    two sets of log-probs agree."""

    output_dir: str = "runs/smoke"
    model: ModelConfig = field(default_factory=ModelConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    num_prompts: int = 2
    # Largest |logp_vllm - logp_hf| allowed per token. fp32 agrees to ~5e-6 on CPU; bf16 to ~3e-3.
    atol: float = 1e-4

    def check(self, key: str) -> None:
        _require(bool(self.output_dir), f"{key}output_dir", "a directory path", self.output_dir)
        _require(self.num_prompts >= 1, f"{key}num_prompts", "at least 1", self.num_prompts)
        _require(self.atol > 0, f"{key}atol", "a positive tolerance", self.atol)
        _require(self.rollout.logprobs, f"{key}rollout.logprobs",
                 "true (the smoke test compares log-probs)", self.rollout.logprobs)
        if self.model.dtype != "float32":
            _require(self.atol >= 1e-3, f"{key}atol",
                     f"at least 1e-3 with model.dtype={self.model.dtype} (half-precision log-probs "
                     "differ by ~3e-3 between engines)", self.atol)


@dataclass
class TrainerConfig:
    """The DeepSpeed engine every training stage (SFT, GRPO) builds: ZeRO stage, precision,
    batch geometry, clipping, a torch AdamW and a cosine schedule with linear warmup."""

    zero_stage: int = 3
    dtype: Literal["float32", "bfloat16"] = "bfloat16"
    micro_batch_size: int = 1  # per rank
    grad_accum_steps: int = 1
    grad_clip: float = 1.0  # max global grad norm; 0 turns clipping off
    lr: float = 5e-6
    min_lr_ratio: float = 0.0  # the cosine ends at lr * min_lr_ratio
    warmup_steps: int = 0
    total_steps: int = 1000  # optimizer steps; the length of the cosine
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    freeze_vision: bool = True  # DeepPerception freezes the vision tower and its merger
    # ZeRO-3 keeps parameters with fewer elements than this whole on every rank. DeepSpeed's
    # default (1e5) would keep every tensor of a tiny model whole; 0 partitions everything.
    param_persistence_threshold: int = 100_000
    # DeepSpeed JIT-compiles a shared-memory all-reduce for CPU worlds on every fresh machine
    # (about a minute); gloo alone is correct, so that op is only built when asked for.
    cpu_shm_comm: bool = False

    def check(self, key: str) -> None:
        _require(self.zero_stage in (0, 1, 2, 3), f"{key}zero_stage", "0, 1, 2 or 3", self.zero_stage)
        _require(self.micro_batch_size >= 1, f"{key}micro_batch_size", "at least 1",
                 self.micro_batch_size)
        _require(self.grad_accum_steps >= 1, f"{key}grad_accum_steps", "at least 1",
                 self.grad_accum_steps)
        _require(self.grad_clip >= 0, f"{key}grad_clip", "a non-negative norm (0: off)", self.grad_clip)
        _require(self.lr > 0, f"{key}lr", "a positive learning rate", self.lr)
        _require(0 <= self.min_lr_ratio <= 1, f"{key}min_lr_ratio", "a fraction in [0, 1]",
                 self.min_lr_ratio)
        _require(self.total_steps >= 1, f"{key}total_steps", "at least 1", self.total_steps)
        _require(0 <= self.warmup_steps <= self.total_steps, f"{key}warmup_steps",
                 f"between 0 and total_steps={self.total_steps}", self.warmup_steps)
        _require(self.weight_decay >= 0, f"{key}weight_decay", "a non-negative number",
                 self.weight_decay)
        _require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"{key}betas",
                 "two numbers in [0, 1)", self.betas)
        _require(self.eps > 0, f"{key}eps", "a positive number", self.eps)
        _require(self.param_persistence_threshold >= 0, f"{key}param_persistence_threshold",
                 "a non-negative element count", self.param_persistence_threshold)


@dataclass
class WeightSyncConfig:
    """How trained weights reach the rollout engine after an optimizer step."""

    # Tensors are gathered (ZeRO-3) and sent one bucket at a time, so the extra memory is about
    # one bucket. Buckets hold whole decoder blocks: a block larger than this is one bucket.
    bucket_mb: float = 256.0
    trainable_only: bool = True  # send only what training changes (frozen vision tower stays)

    def check(self, key: str) -> None:
        _require(self.bucket_mb > 0, f"{key}bucket_mb", "a positive size in MiB", self.bucket_mb)


@dataclass
class SFTDataConfig:
    """SFT data: grounding samples with chain-of-thought replies (the world's kvg_train.jsonl
    schema: `prompt`, `response`, `image`), optionally with text-only knowledge Q/A mixed in."""

    train_path: str = "data/world/kvg_train.jsonl"
    image_root: str = ""  # images are relative to this; empty: the data file's folder
    # The world's text-only corpus (fields question, answer); empty: no knowledge mixing.
    knowledge_path: str = ""
    # Knowledge samples added to every micro-batch, on top of micro_batch_size grounding samples
    # (never instead of them: under ZeRO-3 every rank must run the vision tower every micro-batch).
    knowledge_per_batch: int = 0
    # Share of knowledge samples asked next to a picture drawn from the grounding training set
    # (which shows other entities, or the same one by chance; never an unseen domain). A model
    # that met knowledge only as text recalls it only without a picture: with one in the prompt
    # it reads the look off the picture instead (dprl.train.batches.BatchPlan.pictures).
    knowledge_picture_share: float = 0.0
    max_samples: int = 0  # 0: all grounding samples
    max_length: int = 1024  # tokens per sample, images expanded; longer replies are cut
    shuffle: bool = True
    seed: int = 0

    def check(self, key: str) -> None:
        _require(self.train_path.endswith((".jsonl", ".json", ".parquet")), f"{key}train_path",
                 "a .jsonl, .json or .parquet file", self.train_path)
        if self.knowledge_path:
            _require(self.knowledge_path.endswith((".jsonl", ".json", ".parquet")), f"{key}knowledge_path",
                     "a .jsonl, .json or .parquet file", self.knowledge_path)
        _require(self.knowledge_per_batch >= 0, f"{key}knowledge_per_batch", "a count >= 0",
                 self.knowledge_per_batch)
        _require(not self.knowledge_per_batch or bool(self.knowledge_path), f"{key}knowledge_path",
                 f"a knowledge corpus file when knowledge_per_batch={self.knowledge_per_batch}",
                 self.knowledge_path)
        _require(0.0 <= self.knowledge_picture_share <= 1.0, f"{key}knowledge_picture_share",
                 "a share in [0, 1]", self.knowledge_picture_share)
        _require(self.max_samples >= 0, f"{key}max_samples", "a count >= 0 (0: all)", self.max_samples)
        _require(self.max_length >= 16, f"{key}max_length", "at least 16 tokens", self.max_length)


@dataclass
class LogConfig:
    """Where a training run's metrics go besides metrics.jsonl and TensorBoard (always written,
    rank 0 only)."""

    # Also log to Weights & Biases (pip install wandb). WANDB_MODE=offline logs without a network
    # (`wandb sync` uploads later); a resumed run continues the same wandb run.
    wandb: bool = False
    wandb_project: str = "dprl"
    wandb_name: str = ""  # the run's display name; default: the output directory's name
    wandb_tags: list[str] = field(default_factory=list)
    # The device's peak in TFLOP/s for the run's dtype (e.g. 989 for an H100's dense bf16); when
    # set, MFU (model FLOPs per second over this peak) is logged next to tokens/s (GRPO).
    peak_tflops: float = 0.0
    # Steps (counted from 1) whose torch.profiler trace goes to <output_dir>/profile/ as Chrome /
    # Perfetto JSON, with each phase of the step marked (GRPO).
    profile_steps: list[int] = field(default_factory=list)

    def check(self, key: str) -> None:
        _require(self.peak_tflops >= 0, f"{key}peak_tflops", "0 (no MFU) or the device's peak TFLOP/s",
                 self.peak_tflops)
        _require(all(isinstance(s, int) and s >= 1 for s in self.profile_steps), f"{key}profile_steps",
                 "a list of step numbers counted from 1", self.profile_steps)
        if self.wandb:
            import importlib.util

            _require(importlib.util.find_spec("wandb") is not None, f"{key}wandb",
                     "false, or the wandb package installed (pip install wandb)", self.wandb)
            _require(bool(self.wandb_project), f"{key}wandb_project", "a project name", self.wandb_project)


@dataclass
class SFTConfig:
    """`dprl sft`: stage 1 of the recipe, supervised fine-tuning on chain-of-thought grounding data
    with the shared DeepSpeed engine. The run directory gets the final HF checkpoint (`final/`),
    the resumable training state (`state/`), metrics.jsonl, TensorBoard logs and loss.png.

    `trainer.total_steps` is not read: the schedule's length comes from the data (epochs x steps
    per epoch, or max_steps). Nor is `model.dtype`: the model is loaded in `trainer.dtype`."""

    output_dir: str = "runs/sft"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    log: LogConfig = field(default_factory=LogConfig)
    epochs: int = 1
    max_steps: int = 0  # optimizer steps; 0: `epochs` passes over the data
    warmup_ratio: float = 0.0  # > 0: warmup over this fraction of the steps (else trainer.warmup_steps)
    # DeepPerception freezes both. trainer.freeze_vision freezes both too; set it false to choose
    # them one by one here.
    freeze_vision_tower: bool = True
    freeze_projector: bool = True
    # Recompute activations in the backward pass: less memory for long sequences on big models.
    gradient_checkpointing: bool = False
    log_every: int = 1  # optimizer steps between metric rows
    save_every: int = 0  # optimizer steps between resumable states; 0: only at the end
    keep_states: int = 1  # newest resumable states kept on disk; older ones are deleted
    resume: bool = True  # continue from output_dir/state when it holds one
    # Stop after this many optimizer steps as if interrupted (state saved, no final checkpoint);
    # 0: run to the end. For testing and for splitting a long run into chunks.
    stop_after: int = 0

    def check(self, key: str) -> None:
        _require(bool(self.output_dir), f"{key}output_dir", "a directory path", self.output_dir)
        _require(self.epochs >= 1, f"{key}epochs", "at least 1", self.epochs)
        _require(self.max_steps >= 0, f"{key}max_steps", "a step count >= 0 (0: epochs)", self.max_steps)
        _require(0.0 <= self.warmup_ratio < 1.0, f"{key}warmup_ratio", "a fraction in [0, 1)",
                 self.warmup_ratio)
        _require(not (self.warmup_ratio and self.trainer.warmup_steps), f"{key}warmup_ratio",
                 f"0 when trainer.warmup_steps={self.trainer.warmup_steps} is set (one or the other)",
                 self.warmup_ratio)
        _require(not self.trainer.freeze_vision or (self.freeze_vision_tower and self.freeze_projector),
                 f"{key}trainer.freeze_vision",
                 "false when freeze_vision_tower or freeze_projector is false (it freezes both)",
                 self.trainer.freeze_vision)
        _require(self.log_every >= 1, f"{key}log_every", "at least 1", self.log_every)
        _require(self.save_every >= 0, f"{key}save_every", "a step count >= 0 (0: at the end)",
                 self.save_every)
        _require(self.keep_states >= 1, f"{key}keep_states", "at least 1", self.keep_states)
        _require(self.stop_after >= 0, f"{key}stop_after", "a step count >= 0 (0: off)", self.stop_after)


@dataclass
class RewardTermConfig:
    """One reward function by name (a built-in of dprl.rewards or one registered with
    `dprl.rewards.register_reward`) and its weight in the sum. Built-ins: format, iou,
    iou_threshold, iou_squared, acc, mc_letter; "acc@0.5" is shorthand for tau: 0.5."""

    name: str = "iou_threshold"
    weight: float = 1.0
    tau: float | None = None  # iou_threshold (default 0.8) and acc (default 0.5) only

    def check(self, key: str) -> None:
        base, _, at = self.name.partition("@")
        _require(bool(base) and base.replace("_", "a").replace(".", "a").replace(":", "a").isalnum(),
                 f"{key}name", "a reward name such as iou_threshold or acc@0.5", self.name)
        if at:
            try:
                float(at)
            except ValueError:
                _require(False, f"{key}name", "a number after '@' (e.g. acc@0.5)", self.name)
        _require(self.weight == self.weight and abs(self.weight) != float("inf"), f"{key}weight",
                 "a finite number", self.weight)
        if self.tau is not None:
            _require(0.0 <= self.tau <= 1.0, f"{key}tau", "a threshold in [0, 1]", self.tau)
        # Checked here, not when the reward is built after the model and the engine have loaded.
        # Local import: the names live with the rewards, and a researcher's registered ones count.
        from dprl.rewards import available_rewards

        names = available_rewards()
        _require(base in names, f"{key}name", f"a built-in or registered reward ({', '.join(names)}; "
                 "register your own with dprl.rewards.register_reward)", self.name)


@dataclass
class BoxParseConfig:
    """How boxes are read from completions (see dprl.rewards.ParseOptions)."""

    scope: Literal["answer", "anywhere"] = "answer"
    pick: Literal["last", "first"] = "last"
    formats: list[Literal["points", "list", "tuple"]] = field(
        default_factory=lambda: ["points", "list", "tuple"])
    coords: Literal["auto", "norm1000", "fraction", "pixels"] = "auto"
    swapped: Literal["fix", "reject"] = "fix"
    clamp: bool = False

    def check(self, key: str) -> None:
        _require(len(self.formats) > 0, f"{key}formats", "at least one box format", self.formats)


def _deepperception_terms() -> list:
    return [RewardTermConfig("format", 1.0), RewardTermConfig("iou_threshold", 1.0, 0.8)]


@dataclass
class RewardConfig:
    """The GRPO reward: a weighted sum of named reward functions (DeepPerception: format +
    IoU thresholded at 0.8, boxes read from inside <answer>, last match). dprl's versions differ
    at the edges: iou_threshold pays at IoU >= 0.8 (the original: > 0.8), the format rule is
    anchored to the whole text, and its box half can fire (the original's never did)."""

    functions: list[RewardTermConfig] = field(default_factory=_deepperception_terms)
    parse: BoxParseConfig = field(default_factory=BoxParseConfig)

    def check(self, key: str) -> None:
        _require(len(self.functions) > 0, f"{key}functions", "at least one reward function",
                 self.functions)
        for i, term in enumerate(self.functions):
            term.check(f"{key}functions[{i}].")


@dataclass
class GRPOAlgoConfig:
    """The GRPO objective. Defaults are DeepPerception's: beta 0.04 (k3 KL), one update per
    rollout batch, (r - mean) / (std + 1e-4), loss averaged over tokens then over sequences."""

    beta: float = 0.04  # 0: no KL term and no reference model is loaded
    eps_low: float = 0.2
    eps_high: float = 0.2  # DAPO's clip-higher: raise this (e.g. 0.28)
    aggregation: Literal["seq_mean", "token_mean", "dr_grpo"] = "seq_mean"
    advantage: Literal["std", "mean_only"] = "std"  # mean_only: Dr. GRPO
    advantage_eps: float = 1e-4
    updates_per_rollout: int = 1  # mu: passes over each rollout batch (> 1 needs old log-probs)
    # Truncated importance sampling for rollout/trainer mismatch: weight min(pi_old/pi_rollout, C).
    tis_cap: float = 0.0  # 0: off
    # DAPO's dynamic sampling: groups whose rewards are all equal (no gradient) are replaced by
    # groups of fresh prompts, over at most max_sampling_rounds rollout rounds per step; a batch
    # still short after that is filled with zero-variance groups and the shortfall is logged.
    dynamic_sampling: bool = False
    max_sampling_rounds: int = 3  # rounds per step including the first (DAPO's max_num_gen_batches)
    # Each group is one row: its prompt (and image) once, then its G completions, each seeing
    # the prompt and itself only (dprl/train/shared_prompt.py). false: one row per completion.
    share_prompts: bool = True
    # Micro-batches hold at most trainer.micro_batch_size sequences and, when this is > 0, at most
    # this many padded tokens (rows x longest row); rows of like length are batched together.
    micro_batch_tokens: int = 0

    def check(self, key: str) -> None:
        _require(1 <= self.max_sampling_rounds <= 100, f"{key}max_sampling_rounds",
                 "a whole number of rollout rounds per step in [1, 100]", self.max_sampling_rounds)
        _require(self.beta >= 0, f"{key}beta", "a non-negative KL coefficient", self.beta)
        _require(0 <= self.eps_low < 1, f"{key}eps_low", "a number in [0, 1)", self.eps_low)
        _require(self.eps_high >= 0, f"{key}eps_high", "a non-negative number", self.eps_high)
        _require(self.advantage_eps > 0, f"{key}advantage_eps", "a positive number", self.advantage_eps)
        _require(self.updates_per_rollout >= 1, f"{key}updates_per_rollout", "at least 1",
                 self.updates_per_rollout)
        _require(self.tis_cap >= 0, f"{key}tis_cap", "0 (off) or a positive cap", self.tis_cap)
        _require(self.micro_batch_tokens >= 0, f"{key}micro_batch_tokens",
                 "0 (no token budget) or a positive number of padded tokens per micro-batch",
                 self.micro_batch_tokens)


@dataclass
class GRPODataConfig:
    """Prompts for GRPO: a KVG-Bench-schema grounding file (the world's train split by default)."""

    path: str = "data/world/kvg_train.jsonl"
    image_root: str = ""  # default: the file's folder
    domains: list[str] = field(default_factory=list)  # empty: all
    prompts_per_step: int = 2  # per rank; each gets rollout.n completions
    shuffle_seed: int = 0

    def check(self, key: str) -> None:
        _require(bool(self.path), f"{key}path", "a data file path", self.path)
        _require(self.path.endswith((".jsonl", ".json", ".parquet")), f"{key}path",
                 "a .jsonl, .json or .parquet file (KVG-Bench's columns, or the released GRPO "
                 "parquet's problem/solution/image)", self.path)
        _require(self.prompts_per_step >= 1, f"{key}prompts_per_step", "at least 1", self.prompts_per_step)


@dataclass
class GRPOConfig:
    """`dprl grpo`: GRPO with colocated rollouts, rule rewards and the fused loss."""

    output_dir: str = "runs/grpo"
    steps: int = 8  # rollout + update rounds
    save_every: int = 4  # steps between resumable checkpoints (0: only at the end)
    resume: bool = True  # continue from output_dir's last checkpoint if there is one
    model: ModelConfig = field(default_factory=ModelConfig)
    data: GRPODataConfig = field(default_factory=GRPODataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(
        zero_stage=0, dtype="float32", lr=1e-6, micro_batch_size=8))
    sync: WeightSyncConfig = field(default_factory=WeightSyncConfig)
    grpo: GRPOAlgoConfig = field(default_factory=GRPOAlgoConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def check(self, key: str) -> None:
        _require(self.steps >= 1, f"{key}steps", "at least 1", self.steps)
        _require(self.save_every >= 0, f"{key}save_every", "0 or a positive number of steps", self.save_every)
        _require(self.rollout.n >= 2, f"{key}rollout.n",
                 "at least 2 (group-relative advantages need a group)", self.rollout.n)
        _require(self.rollout.temperature > 0, f"{key}rollout.temperature",
                 "a positive sampling temperature", self.rollout.temperature)
        # The trainer scores the temperature-scaled softmax (without vision tokens). A top-p or
        # top-k cut would make the sampler's distribution another one, and every importance ratio
        # and KL term wrong without a sign; refuse it rather than train on the mismatch.
        for name, value, off in (("top_p", self.rollout.top_p, 1.0), ("top_k", self.rollout.top_k, -1)):
            _require(value == off, f"{key}rollout.{name}",
                     f"{off} for GRPO (the trainer scores the full softmax at rollout.temperature, "
                     "so a truncated sampler would train on a distribution it never sampled from; "
                     "lower rollout.temperature instead)", value)
        seqs = self.data.prompts_per_step * self.rollout.n
        geometry = self.trainer.micro_batch_size * self.trainer.grad_accum_steps
        _require(seqs == geometry, f"{key}trainer.grad_accum_steps",
                 f"micro_batch_size x grad_accum_steps = data.prompts_per_step x rollout.n = {seqs} "
                 f"sequences per rank and update (got {self.trainer.micro_batch_size} x "
                 f"{self.trainer.grad_accum_steps} = {geometry})", self.trainer.grad_accum_steps)


@dataclass
class WorldConfig:
    """`dprl world`: the synthetic fine-grained world (dprl/data). Deterministic for `seed`.

    Grounding samples of the seen domains go to train/val/test, those of the unseen domains to
    test only (as in KVG-Bench); FGVR multiple-choice samples likewise; the text-only knowledge
    corpus covers every domain."""

    output_dir: str = "data/world"
    seed: int = 0
    seen_domains: list[str] = field(default_factory=lambda: ["aircraft", "car", "reptile", "bird", "food"])
    unseen_domains: list[str] = field(default_factory=lambda: ["dog", "mollusc", "mammal", "flower", "landmark"])
    categories_per_domain: int = 8
    image_size: int = 112  # square pictures; 112 = 8x8 patches of 14 px = 16 visual tokens
    min_entities: int = 2
    max_entities: int = 4
    # Entity box side (its longer side) as a fraction of the image side.
    min_entity_size: float = 0.25
    max_entity_size: float = 0.38
    # Chance that a distractor is drawn from the target's look-alikes (same colour, other mark)
    # while one is left, instead of any other category of the domain.
    distractor_similarity: float = 0.5
    box_format: Literal["norm1000", "pixels"] = "norm1000"  # Qwen2-VL 0-1000, or image pixels
    # "grid": one entity per cell of a grid_size x grid_size grid, off-centre by up to
    # cell_jitter of the room left in the cell, and the chain of thought visits the cells in
    # reading order ("top left: purple dark marks, no. top right: none. ..."). A grid makes the
    # box a function of a named cell, which a model too small to regress free positions can
    # learn. "free": entities anywhere (non-overlapping), named left to right.
    layout: Literal["free", "grid"] = "grid"
    grid_size: int = 2
    cell_jitter: float = 0.5
    # Strength of a tint that varies smoothly across the picture (redder to the right, bluer to
    # the bottom; 0 = none, 1 = 96 levels from one edge to the other, background only).
    # Qwen2-VL's vision tower encodes position only relatively (2-D RoPE), so a tiny one cannot
    # tell where a patch is; the tint writes position into every background patch's pixels.
    position_tint: float = 0.5
    # The knowledge corpus states each category's look also as the first sentence of a chain of
    # thought after the grounding question (dprl.data.world.knowledge): no picture, no box.
    corpus_recall: bool = True
    train_per_domain: int = 800
    val_per_domain: int = 40
    test_per_domain: int = 100
    fgvr_train_per_domain: int = 200
    fgvr_test_per_domain: int = 50
    fgvr_choices: int = 4
    workers: int = 0  # image-writing processes; 0: one per CPU core

    def check(self, key: str) -> None:
        from dprl.data.domains import ALL_DOMAINS, COLOURS

        _require(bool(self.output_dir), f"{key}output_dir", "a directory path", self.output_dir)
        domains = self.seen_domains + self.unseen_domains
        for name in ("seen_domains", "unseen_domains"):
            for d in getattr(self, name):
                _require(d in ALL_DOMAINS, f"{key}{name}", f"domains from {ALL_DOMAINS}", d)
        _require(len(set(domains)) == len(domains), f"{key}unseen_domains",
                 "no domain both seen and unseen or listed twice", domains)
        _require(len(self.seen_domains) > 0, f"{key}seen_domains", "at least one domain",
                 self.seen_domains)
        _require(2 <= self.categories_per_domain <= 2 * len(COLOURS), f"{key}categories_per_domain",
                 f"2 to {2 * len(COLOURS)} (colours x marks)", self.categories_per_domain)
        _require(self.image_size >= 28, f"{key}image_size", "at least 28 pixels", self.image_size)
        _require(1 <= self.min_entities <= self.max_entities, f"{key}min_entities",
                 f"between 1 and max_entities={self.max_entities}", self.min_entities)
        _require(self.max_entities <= min(6, self.categories_per_domain), f"{key}max_entities",
                 f"at most 6 and at most categories_per_domain={self.categories_per_domain} "
                 "(entities in a scene are of distinct categories)", self.max_entities)
        _require(0 < self.min_entity_size <= self.max_entity_size <= 0.6, f"{key}min_entity_size",
                 "0 < min_entity_size <= max_entity_size <= 0.6", (self.min_entity_size, self.max_entity_size))
        _require(self.min_entity_size * self.image_size >= 8, f"{key}min_entity_size",
                 f"entities of at least 8 pixels (image_size={self.image_size})", self.min_entity_size)
        if self.layout == "grid":
            _require(2 <= self.grid_size <= 3, f"{key}grid_size", "2 or 3 cells per side", self.grid_size)
            _require(self.max_entities <= self.grid_size ** 2, f"{key}max_entities",
                     f"at most grid_size**2 = {self.grid_size ** 2} (one entity per cell)",
                     self.max_entities)
            _require(self.max_entity_size * self.grid_size <= 0.9, f"{key}max_entity_size",
                     f"at most {0.9 / self.grid_size:.3f} with grid_size={self.grid_size} (an entity "
                     "fits in its cell with a margin)", self.max_entity_size)
        _require(0.0 <= self.cell_jitter <= 1.0, f"{key}cell_jitter", "a fraction in [0, 1]",
                 self.cell_jitter)
        _require(0.0 <= self.position_tint <= 1.0, f"{key}position_tint", "a strength in [0, 1]",
                 self.position_tint)
        _require(0.0 <= self.distractor_similarity <= 1.0, f"{key}distractor_similarity",
                 "a probability in [0, 1]", self.distractor_similarity)
        for name in ("train_per_domain", "val_per_domain", "test_per_domain",
                     "fgvr_train_per_domain", "fgvr_test_per_domain", "workers"):
            _require(getattr(self, name) >= 0, f"{key}{name}", "a count >= 0", getattr(self, name))
        _require(2 <= self.fgvr_choices <= min(6, self.categories_per_domain), f"{key}fgvr_choices",
                 f"2 to min(6, categories_per_domain={self.categories_per_domain})", self.fgvr_choices)


@dataclass
class CheckpointConfig:
    """One model to evaluate. An empty `path` builds the tiny offline model (untrained)."""

    name: str = "tiny-untrained"
    path: str = ""

    def check(self, key: str) -> None:
        _require(bool(self.name) and "/" not in self.name and not self.name.startswith("."),
                 f"{key}name", "a non-empty name without '/' (it names a folder)", self.name)
        if self.path:
            _require(os.path.isdir(os.path.expanduser(self.path)), f"{key}path",
                     "an existing local checkpoint directory (nothing is downloaded)", self.path)


@dataclass
class EvalDataConfig:
    """A data set in KVG-Bench's schema (question_id, question, image, answer, category), or in
    FGVR's (question_id, question, image, answer letter, category): a .jsonl/.json or .parquet
    file. `image` is a path relative to `image_root` (default: the file's folder), an absolute
    path, or embedded bytes."""

    path: str = "data/world/kvg_test.jsonl"
    image_root: str = ""
    task: Literal["kvg", "fgvr"] = "kvg"
    domains: list[str] = field(default_factory=list)  # empty: all
    max_per_domain: int = 0  # 0: all samples
    # Which domains count as seen when a sample has no `seen` field (KVG-Bench's split; its
    # category is spelt "reptilia", the world's domain "reptile").
    seen_domains: list[str] = field(default_factory=lambda: ["aircraft", "car", "reptile", "reptilia", "bird",
                                                             "food"])

    def check(self, key: str) -> None:
        _require(bool(self.path), f"{key}path", "a .jsonl, .json or .parquet file", self.path)
        _require(self.path.endswith((".jsonl", ".json", ".parquet")), f"{key}path",
                 "a .jsonl, .json or .parquet file", self.path)
        _require(self.max_per_domain >= 0, f"{key}max_per_domain", "a count >= 0 (0: all)",
                 self.max_per_domain)


@dataclass
class KnowledgeProbeConfig:
    """The knowledge probe (dprl.eval.knowledge_probe): text-only questions about each entity of
    a knowledge file, asked with the same engine and greedy decoding as the grounding questions;
    the table then shows which entities each model knows and Acc@0.5 on known vs unknown ones."""

    path: str = ""  # JSONL, one row per entity (the world's knowledge_base.jsonl); empty: no probe
    kind: Literal["look", "choice"] = "look"  # open question scored by attributes, or a letter
    question: str = "What does the {entity} look like?"  # the look probe's question
    choices: int = 4  # options per choice question
    max_tokens: int = 48
    seed: int = 0  # the order of the options

    def check(self, key: str) -> None:
        if self.path:
            _require(self.path.endswith(".jsonl"), f"{key}path", "a .jsonl file", self.path)
        _require("{entity}" in self.question, f"{key}question", "a template with {entity}",
                 self.question)
        _require(2 <= self.choices <= 8, f"{key}choices", "2 to 8 options", self.choices)
        _require(self.max_tokens >= 1, f"{key}max_tokens", "at least 1", self.max_tokens)


def _greedy_rollout() -> "RolloutConfig":
    return RolloutConfig(n=1, temperature=0.0, logprobs=False, max_tokens=96)


@dataclass
class EvalConfig:
    """`dprl eval`: KVG-Bench-format grounding accuracy (Acc@0.5) or FGVR multiple-choice
    accuracy of one or more checkpoints, side by side."""

    output_dir: str = "runs/eval"
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    checkpoints: list[CheckpointConfig] = field(default_factory=lambda: [CheckpointConfig()])
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)  # for checkpoints without a path
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # plain: the question alone; r1: question + "<think>/<answer>" instruction; cot2: first ask
    # for the named entity's features, then the question in a second turn.
    prompt_mode: Literal["plain", "r1", "cot2"] = "r1"
    rollout: RolloutConfig = field(default_factory=_greedy_rollout)
    describe_max_tokens: int = 48  # cot2's first turn
    batch_size: int = 64  # prompts per engine call; predictions are saved after each
    iou_threshold: float = 0.5
    parse: BoxParseConfig = field(default_factory=BoxParseConfig)
    # How grounding answers are read and scored: dprl = the reward parser with `parse`;
    # official = the KVG-Bench scorer's rules (dprl.eval.official), for numbers set next to the
    # paper's; it ignores `parse` and takes the benchmark's own seen/unseen split.
    scorer: Literal["dprl", "official"] = "dprl"
    # Trivial baselines scored from the data alone (needs the world's `candidates` field).
    baselines: list[Literal["random_entity", "largest_entity"]] = field(default_factory=list)
    probe: KnowledgeProbeConfig = field(default_factory=KnowledgeProbeConfig)

    def check(self, key: str) -> None:
        _require(bool(self.output_dir), f"{key}output_dir", "a directory path", self.output_dir)
        _require(len(self.checkpoints) + len(self.baselines) > 0, f"{key}checkpoints",
                 "at least one checkpoint or baseline", self.checkpoints)
        names = [c.name for c in self.checkpoints] + list(self.baselines)
        for i, c in enumerate(self.checkpoints):
            c.check(f"{key}checkpoints[{i}].")
        _require(len(set(names)) == len(names), f"{key}checkpoints", "distinct names", names)
        _require(self.rollout.n == 1, f"{key}rollout.n", "1 (one answer per question)", self.rollout.n)
        _require(self.describe_max_tokens >= 1, f"{key}describe_max_tokens", "at least 1",
                 self.describe_max_tokens)
        _require(self.batch_size >= 1, f"{key}batch_size", "at least 1", self.batch_size)
        _require(0 < self.iou_threshold <= 1, f"{key}iou_threshold", "a threshold in (0, 1]",
                 self.iou_threshold)
        _require(self.scorer == "dprl" or self.data.task == "kvg", f"{key}scorer",
                 "dprl for data.task=fgvr (the official scorer reads grounding boxes only)",
                 self.scorer)
        if self.prompt_mode != "r1" and self.scorer == "dprl":
            _require(self.parse.scope == "anywhere", f"{key}parse.scope",
                     f"'anywhere' with prompt_mode={self.prompt_mode} (that prompt asks for no "
                     "<answer> tag)", self.parse.scope)
        _require(self.parse.coords != "pixels", f"{key}parse.coords",
                 "auto, norm1000 or fraction (ground truth is compared in 0-1000 coordinates)",
                 self.parse.coords)


@dataclass
class PipelineConfig:
    """`dprl pipeline`: the whole recipe on one machine, each stage in its own process:
    world -> CoT-SFT -> GRPO -> evaluation of the untrained, SFT and SFT+GRPO models side by side.

    The stages' files are wired together under `output_dir` (world/, sft/, grpo/, eval/): the
    paths inside the sections below that link one stage to the next are set by the pipeline.
    A finished stage is skipped on a re-run; an interrupted one resumes."""

    output_dir: str = "runs/pipeline"
    stages: list[Literal["world", "sft", "grpo", "eval"]] = field(
        default_factory=lambda: ["world", "sft", "grpo", "eval"])
    world: WorldConfig = field(default_factory=WorldConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def check(self, key: str) -> None:
        _require(bool(self.output_dir), f"{key}output_dir", "a directory path", self.output_dir)
        _require(bool(self.stages) and len(set(self.stages)) == len(self.stages), f"{key}stages",
                 "a non-empty list of distinct stages", self.stages)


# ---------------------------------------------------------------------------------------------
# Loading: YAML + dotted overrides -> validated dataclass
# ---------------------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return f"a mapping (section {tp.__name__})"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _convert(value: Any, tp: Any, key: str, base: Any = None) -> Any:
    """Checks `value` against the annotation `tp` and returns it in that type. `base`: for a
    section, the default it overlays (see _build)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        return _build(tp, value, key + ".", base)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _convert(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{key}: expected null, got {value!r}")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # `lr=inf` arrives as text (YAML spells infinity .inf): say what is wrong with it.
            expected = "a finite number" if _is_non_finite_text(value) else "a number"
            raise ConfigError(f"{key}: expected {expected}, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if tp is Any:
        return value
    raise TypeError(f"config field {key} has an unsupported annotation {tp!r}")


def _section_default(f: dataclasses.Field) -> Any:
    """The default instance of a section field (its default_factory's product), else None."""
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return value if dataclasses.is_dataclass(value) else None
    return None


def _build(cls: type, data: dict, prefix: str = "", base: Any = None) -> Any:
    """`data` overlaid on `base` (or on cls's defaults). A section's given keys replace only
    themselves: the rest keep the defaults its parent chose (e.g. a stage whose trainer section
    defaults to fp32 stays fp32 when only trainer.lr is set)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown key in section {cls.__name__}; "
            f"valid keys are: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        sub_base = getattr(base, name) if base is not None else _section_default(fields[name])
        if not dataclasses.is_dataclass(sub_base):
            sub_base = None
        kwargs[name] = _convert(value, hints[name], prefix + name, sub_base)
    return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)


def _is_non_finite_text(value: Any) -> bool:
    """Whether `value` is text that Python reads as nan or inf ("inf", "-Infinity", "nan")."""
    try:
        return isinstance(value, str) and not math.isfinite(float(value))
    except ValueError:
        return False


def _first_non_finite(value: Any, key: str) -> tuple[str, float] | None:
    """(dotted key, value) of the first nan or inf in `value`: a number, a list, or a section
    (lists of sections included, e.g. reward.functions[0].tau); None when all are finite."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (key, value)
    if isinstance(value, (list, tuple)):
        items = ((f"{key}[{i}]", v) for i, v in enumerate(value))
    elif dataclasses.is_dataclass(value):
        items = ((f"{key}.{f.name}" if key else f.name, getattr(value, f.name))
                 for f in dataclasses.fields(value))
    else:
        return None
    for item_key, item in items:
        found = _first_non_finite(item, item_key)
        if found:
            return found
    return None


def _check_finite(cfg: Any) -> None:
    """No setting takes nan or inf, so one check covers every number of every config, before the
    sections' own checks: those compare, and `lr > 0` holds for inf (a run would train to NaN
    and exit 0) while nan fails every comparison with a message that hides the cause."""
    found = _first_non_finite(cfg, "")
    if found:
        _require(False, found[0], "a finite number (nan and inf are not valid settings)", found[1])


def _check_all(obj: Any, key: str = "") -> None:
    """Runs every section's `check(prefix)`, children first; prefix is its dotted key plus "."."""
    for f in dataclasses.fields(obj):
        child = getattr(obj, f.name)
        if dataclasses.is_dataclass(child):
            _check_all(child, f"{key}{f.name}.")
    if hasattr(obj, "check"):
        obj.check(key)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=VALUE` -> (["a", "b", "c"], VALUE parsed as YAML, so 1e-6, true, [1, 2] work)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. rollout.temperature=0.7")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: the key must be dotted names, e.g. rollout.n=8")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({err})") from None
    # YAML reads 1e-6 as a string (it wants 1.0e-6); take it as the number the user meant.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value.lower() for c in ".e") else int(value)
        except ValueError:
            pass
    return key.split("."), value


def load_config(cls: type, path: str | None = None, overrides: list[str] = ()) -> Any:
    """Builds a validated `cls` from an optional YAML file and dotted `key=value` overrides."""
    data: dict = {}
    if path:
        if not os.path.isfile(path):
            raise ConfigError(f"config file {path!r} does not exist")
        with open(path) as fh:
            try:
                loaded = yaml.safe_load(fh)
            except yaml.YAMLError as err:
                raise ConfigError(f"config file {path!r} is not valid YAML: {err}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path!r}: expected a mapping at the top level")
        data = loaded
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for i, k in enumerate(keys[:-1]):
            nxt = node.setdefault(k, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(keys[: i + 1])} is not a section")
            node = nxt
        node[keys[-1]] = value
    cfg = _build(cls, data)
    _check_finite(cfg)
    _check_all(cfg)
    return cfg


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, directory: str, name: str = "config.yaml") -> str:
    """Writes the resolved config (every field, defaults included) next to a run's results."""
    os.makedirs(directory, exist_ok=True)
    out = os.path.join(directory, name)
    with open(out, "w") as fh:
        yaml.safe_dump(to_dict(cfg), fh, sort_keys=False)
    return out
