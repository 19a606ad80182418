"""The training stages: the DeepSpeed engine they share, weight sync, logging, SFT and GRPO."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dprl.config.loader import require
from dprl.config.model import ModelConfig
from dprl.config.rewards import RewardConfig
from dprl.config.rollout import RolloutConfig


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
        require(self.zero_stage in (0, 1, 2, 3), f"{key}zero_stage", "0, 1, 2 or 3", self.zero_stage)
        require(self.micro_batch_size >= 1, f"{key}micro_batch_size", "at least 1",
                 self.micro_batch_size)
        require(self.grad_accum_steps >= 1, f"{key}grad_accum_steps", "at least 1",
                 self.grad_accum_steps)
        require(self.grad_clip >= 0, f"{key}grad_clip", "a non-negative norm (0: off)", self.grad_clip)
        require(self.lr > 0, f"{key}lr", "a positive learning rate", self.lr)
        require(0 <= self.min_lr_ratio <= 1, f"{key}min_lr_ratio", "a fraction in [0, 1]",
                 self.min_lr_ratio)
        require(self.total_steps >= 1, f"{key}total_steps", "at least 1", self.total_steps)
        require(0 <= self.warmup_steps <= self.total_steps, f"{key}warmup_steps",
                 f"between 0 and total_steps={self.total_steps}", self.warmup_steps)
        require(self.weight_decay >= 0, f"{key}weight_decay", "a non-negative number",
                 self.weight_decay)
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"{key}betas",
                 "two numbers in [0, 1)", self.betas)
        require(self.eps > 0, f"{key}eps", "a positive number", self.eps)
        require(self.param_persistence_threshold >= 0, f"{key}param_persistence_threshold",
                 "a non-negative element count", self.param_persistence_threshold)


@dataclass
class WeightSyncConfig:
    """How trained weights reach the rollout engine after an optimizer step."""

    # Tensors are gathered (ZeRO-3) and sent one bucket at a time, so the extra memory is about
    # one bucket. Buckets hold whole decoder blocks: a block larger than this is one bucket.
    bucket_mb: float = 256.0
    trainable_only: bool = True  # send only what training changes (frozen vision tower stays)

    def check(self, key: str) -> None:
        require(self.bucket_mb > 0, f"{key}bucket_mb", "a positive size in MiB", self.bucket_mb)


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
        require(self.train_path.endswith((".jsonl", ".json", ".parquet")), f"{key}train_path",
                 "a .jsonl, .json or .parquet file", self.train_path)
        if self.knowledge_path:
            require(self.knowledge_path.endswith((".jsonl", ".json", ".parquet")), f"{key}knowledge_path",
                     "a .jsonl, .json or .parquet file", self.knowledge_path)
        require(self.knowledge_per_batch >= 0, f"{key}knowledge_per_batch", "a count >= 0",
                 self.knowledge_per_batch)
        require(not self.knowledge_per_batch or bool(self.knowledge_path), f"{key}knowledge_path",
                 f"a knowledge corpus file when knowledge_per_batch={self.knowledge_per_batch}",
                 self.knowledge_path)
        require(0.0 <= self.knowledge_picture_share <= 1.0, f"{key}knowledge_picture_share",
                 "a share in [0, 1]", self.knowledge_picture_share)
        require(self.max_samples >= 0, f"{key}max_samples", "a count >= 0 (0: all)", self.max_samples)
        require(self.max_length >= 16, f"{key}max_length", "at least 16 tokens", self.max_length)


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
        require(self.peak_tflops >= 0, f"{key}peak_tflops", "0 (no MFU) or the device's peak TFLOP/s",
                 self.peak_tflops)
        require(all(isinstance(s, int) and s >= 1 for s in self.profile_steps), f"{key}profile_steps",
                 "a list of step numbers counted from 1", self.profile_steps)
        if self.wandb:
            import importlib.util

            require(importlib.util.find_spec("wandb") is not None, f"{key}wandb",
                     "false, or the wandb package installed (pip install wandb)", self.wandb)
            require(bool(self.wandb_project), f"{key}wandb_project", "a project name", self.wandb_project)


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
        require(bool(self.output_dir), f"{key}output_dir", "a directory path", self.output_dir)
        require(self.epochs >= 1, f"{key}epochs", "at least 1", self.epochs)
        require(self.max_steps >= 0, f"{key}max_steps", "a step count >= 0 (0: epochs)", self.max_steps)
        require(0.0 <= self.warmup_ratio < 1.0, f"{key}warmup_ratio", "a fraction in [0, 1)",
                 self.warmup_ratio)
        require(not (self.warmup_ratio and self.trainer.warmup_steps), f"{key}warmup_ratio",
                 f"0 when trainer.warmup_steps={self.trainer.warmup_steps} is set (one or the other)",
                 self.warmup_ratio)
        require(not self.trainer.freeze_vision or (self.freeze_vision_tower and self.freeze_projector),
                 f"{key}trainer.freeze_vision",
                 "false when freeze_vision_tower or freeze_projector is false (it freezes both)",
                 self.trainer.freeze_vision)
        require(self.log_every >= 1, f"{key}log_every", "at least 1", self.log_every)
        require(self.save_every >= 0, f"{key}save_every", "a step count >= 0 (0: at the end)",
                 self.save_every)
        require(self.keep_states >= 1, f"{key}keep_states", "at least 1", self.keep_states)
        require(self.stop_after >= 0, f"{key}stop_after", "a step count >= 0 (0: off)", self.stop_after)


AGGREGATIONS = ("seq_mean", "token_mean", "dr_grpo")  # how token losses make the batch's loss


def check_grpo_loss(key: str, *, eps_low: float, eps_high: float, beta: float, tis_cap: float,
                    aggregation: str) -> None:
    """The GRPO loss's settings, checked in one place for the config (`grpo.`) and for the
    kernel's own params (dprl.kernels.GRPOLossParams). tis_cap 0: off."""
    require(aggregation in AGGREGATIONS, f"{key}aggregation", f"one of {', '.join(AGGREGATIONS)}",
            aggregation)
    require(beta >= 0, f"{key}beta", "a non-negative KL coefficient", beta)
    require(0 <= eps_low < 1, f"{key}eps_low", "a number in [0, 1)", eps_low)
    require(eps_high >= 0, f"{key}eps_high", "a non-negative number", eps_high)
    require(tis_cap >= 0, f"{key}tis_cap", "0 (off) or a positive cap", tis_cap)


@dataclass
class GRPOAlgoConfig:
    """The GRPO objective. Defaults are DeepPerception's: beta 0.04 (k3 KL), one update per
    rollout batch, (r - mean) / (std + 1e-4), loss averaged over tokens then over sequences."""

    beta: float = 0.04  # 0: no KL term and no reference model is loaded
    eps_low: float = 0.2
    eps_high: float = 0.2  # DAPO's clip-higher: raise this (e.g. 0.28)
    aggregation: Literal[AGGREGATIONS] = "seq_mean"
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
        require(1 <= self.max_sampling_rounds <= 100, f"{key}max_sampling_rounds",
                 "a whole number of rollout rounds per step in [1, 100]", self.max_sampling_rounds)
        check_grpo_loss(key, eps_low=self.eps_low, eps_high=self.eps_high, beta=self.beta,
                        tis_cap=self.tis_cap, aggregation=self.aggregation)
        require(self.advantage_eps > 0, f"{key}advantage_eps", "a positive number", self.advantage_eps)
        require(self.updates_per_rollout >= 1, f"{key}updates_per_rollout", "at least 1",
                 self.updates_per_rollout)
        require(self.micro_batch_tokens >= 0, f"{key}micro_batch_tokens",
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
        require(bool(self.path), f"{key}path", "a data file path", self.path)
        require(self.path.endswith((".jsonl", ".json", ".parquet")), f"{key}path",
                 "a .jsonl, .json or .parquet file (KVG-Bench's columns, or the released GRPO "
                 "parquet's problem/solution/image)", self.path)
        require(self.prompts_per_step >= 1, f"{key}prompts_per_step", "at least 1", self.prompts_per_step)


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
        require(self.steps >= 1, f"{key}steps", "at least 1", self.steps)
        require(self.save_every >= 0, f"{key}save_every", "0 or a positive number of steps", self.save_every)
        require(self.rollout.n >= 2, f"{key}rollout.n",
                 "at least 2 (group-relative advantages need a group)", self.rollout.n)
        require(self.rollout.temperature > 0, f"{key}rollout.temperature",
                 "a positive sampling temperature", self.rollout.temperature)
        # The trainer scores the temperature-scaled softmax (without vision tokens). A top-p or
        # top-k cut would make the sampler's distribution another one, and every importance ratio
        # and KL term wrong without a sign; refuse it rather than train on the mismatch.
        for name, value, off in (("top_p", self.rollout.top_p, 1.0), ("top_k", self.rollout.top_k, -1)):
            require(value == off, f"{key}rollout.{name}",
                     f"{off} for GRPO (the trainer scores the full softmax at rollout.temperature, "
                     "so a truncated sampler would train on a distribution it never sampled from; "
                     "lower rollout.temperature instead)", value)
        seqs = self.data.prompts_per_step * self.rollout.n
        geometry = self.trainer.micro_batch_size * self.trainer.grad_accum_steps
        require(seqs == geometry, f"{key}trainer.grad_accum_steps",
                 f"micro_batch_size x grad_accum_steps = data.prompts_per_step x rollout.n = {seqs} "
                 f"sequences per rank and update (got {self.trainer.micro_batch_size} x "
                 f"{self.trainer.grad_accum_steps} = {geometry})", self.trainer.grad_accum_steps)
