"""Commands that run the whole stack: `dprl pipeline` (every stage) and `dprl smoke`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dprl.config.data_engine import DataEngineConfig
from dprl.config.eval import EvalConfig
from dprl.config.loader import require
from dprl.config.model import ModelConfig
from dprl.config.rollout import RolloutConfig
from dprl.config.train import GRPOConfig, SFTConfig
from dprl.config.world import WorldConfig


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
        require(bool(self.output_dir), f"{key}output_dir", "a directory path", self.output_dir)
        require(self.num_prompts >= 1, f"{key}num_prompts", "at least 1", self.num_prompts)
        require(self.atol > 0, f"{key}atol", "a positive tolerance", self.atol)
        require(self.rollout.logprobs, f"{key}rollout.logprobs",
                 "true (the smoke test compares log-probs)", self.rollout.logprobs)
        if self.model.dtype != "float32":
            require(self.atol >= 1e-3, f"{key}atol",
                     f"at least 1e-3 with model.dtype={self.model.dtype} (half-precision log-probs "
                     "differ by ~3e-3 between engines)", self.atol)


@dataclass
class PipelineConfig:
    """`dprl pipeline`: the whole recipe on one machine, each stage in its own process:
    world -> CoT-SFT -> GRPO -> evaluation of the untrained, SFT and SFT+GRPO models side by side.

    The stages' files are wired together under `output_dir` (world/, sft/, grpo/, eval/): the
    paths inside the sections below that link one stage to the next are set by the pipeline.
    A finished stage is skipped on a re-run; an interrupted one resumes.

    `data_engine` (a stage only when listed in `stages`) runs the data engine after CoT-SFT: the
    world's FGVR training pictures of the seen domains are its sources (written as image
    folders), the SFT checkpoint is its model, teacher and policy, and GRPO then trains on its
    RL set (kvg_rl.jsonl: prompts the SFT model gets right sometimes) instead of the world's."""

    output_dir: str = "runs/pipeline"
    stages: list[Literal["world", "sft", "data_engine", "grpo", "eval"]] = field(
        default_factory=lambda: ["world", "sft", "grpo", "eval"])
    world: WorldConfig = field(default_factory=WorldConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    data_engine: DataEngineConfig = field(default_factory=DataEngineConfig)

    def check(self, key: str) -> None:
        require(bool(self.output_dir), f"{key}output_dir", "a directory path", self.output_dir)
        require(bool(self.stages) and len(set(self.stages)) == len(self.stages), f"{key}stages",
                 "a non-empty list of distinct stages", self.stages)
