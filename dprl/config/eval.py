"""`dprl eval`: which models, which data, how answers are read and scored, the knowledge probe."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from dprl.config.loader import require
from dprl.config.model import TinyModelConfig
from dprl.config.rewards import ParseOptions
from dprl.config.rollout import RolloutConfig


@dataclass
class CheckpointConfig:
    """One model to evaluate. An empty `path` builds the tiny offline model (untrained)."""

    name: str = "tiny-untrained"
    path: str = ""

    def check(self, key: str) -> None:
        require(bool(self.name) and "/" not in self.name and not self.name.startswith("."),
                 f"{key}name", "a non-empty name without '/' (it names a folder)", self.name)
        if self.path:
            require(os.path.isdir(os.path.expanduser(self.path)), f"{key}path",
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
        require(bool(self.path), f"{key}path", "a .jsonl, .json or .parquet file", self.path)
        require(self.path.endswith((".jsonl", ".json", ".parquet")), f"{key}path",
                 "a .jsonl, .json or .parquet file", self.path)
        require(self.max_per_domain >= 0, f"{key}max_per_domain", "a count >= 0 (0: all)",
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
            require(self.path.endswith(".jsonl"), f"{key}path", "a .jsonl file", self.path)
        require("{entity}" in self.question, f"{key}question", "a template with {entity}",
                 self.question)
        require(2 <= self.choices <= 8, f"{key}choices", "2 to 8 options", self.choices)
        require(self.max_tokens >= 1, f"{key}max_tokens", "at least 1", self.max_tokens)


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
    parse: ParseOptions = field(default_factory=ParseOptions)
    # How grounding answers are read and scored: dprl = the reward parser with `parse`;
    # official = the KVG-Bench scorer's rules (dprl.eval.official), for numbers set next to the
    # paper's; it ignores `parse` and takes the benchmark's own seen/unseen split.
    scorer: Literal["dprl", "official"] = "dprl"
    # Trivial baselines scored from the data alone (needs the world's `candidates` field).
    baselines: list[Literal["random_entity", "largest_entity"]] = field(default_factory=list)
    probe: KnowledgeProbeConfig = field(default_factory=KnowledgeProbeConfig)

    def check(self, key: str) -> None:
        require(bool(self.output_dir), f"{key}output_dir", "a directory path", self.output_dir)
        require(len(self.checkpoints) + len(self.baselines) > 0, f"{key}checkpoints",
                 "at least one checkpoint or baseline", self.checkpoints)
        names = [c.name for c in self.checkpoints] + list(self.baselines)
        for i, c in enumerate(self.checkpoints):
            c.check(f"{key}checkpoints[{i}].")
        require(len(set(names)) == len(names), f"{key}checkpoints", "distinct names", names)
        require(self.rollout.n == 1, f"{key}rollout.n", "1 (one answer per question)", self.rollout.n)
        require(self.describe_max_tokens >= 1, f"{key}describe_max_tokens", "at least 1",
                 self.describe_max_tokens)
        require(self.batch_size >= 1, f"{key}batch_size", "at least 1", self.batch_size)
        require(0 < self.iou_threshold <= 1, f"{key}iou_threshold", "a threshold in (0, 1]",
                 self.iou_threshold)
        require(self.scorer == "dprl" or self.data.task == "kvg", f"{key}scorer",
                 "dprl for data.task=fgvr (the official scorer reads grounding boxes only)",
                 self.scorer)
        if self.prompt_mode != "r1" and self.scorer == "dprl":
            require(self.parse.scope == "anywhere", f"{key}parse.scope",
                     f"'anywhere' with prompt_mode={self.prompt_mode} (that prompt asks for no "
                     "<answer> tag)", self.parse.scope)
        require(self.parse.coords != "pixels", f"{key}parse.coords",
                 "auto, norm1000 or fraction (ground truth is compared in 0-1000 coordinates)",
                 self.parse.coords)
