"""`dprl data-engine`: fine-grained recognition data -> knowledge-filtered, teacher-reasoned KVG
samples. The model-driven stages' settings: knowledge filtering, teacher chains of thought and
the RL set's difficulty filter; each stage samples with its own `rollout:` section."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dprl.config.loader import require
from dprl.config.rollout import RolloutConfig

# The teacher's default prompt, after DeepPerception's chain of thought: plan, look at each
# candidate, compare it with what is known about the named entity, conclude with a box.
TEACHER_TEMPLATE = (
    "{question} First make a plan: which features tell the {entity} apart from other {domain} "
    "categories. Then look at every candidate {domain} in the image and describe those features. "
    "Compare each candidate with what you know about the {entity}, and conclude which one it is. "
    "Output the thinking process in <think> </think> and final answer (bounding box) in "
    "<answer> </answer> tags.")
DESCRIBE_TEMPLATE = ("What does the {entity} look like? Describe briefly the features that tell "
                     "it apart from other {domain} categories.")


def _sampling(n: int, temperature: float, max_tokens: int) -> RolloutConfig:
    # Log-probs are never read by the data engine; the engine returns text.
    return RolloutConfig(n=n, temperature=temperature, max_tokens=max_tokens, logprobs=False)


def _check_template(template: str, key: str, fields: tuple[str, ...]) -> None:
    try:
        template.format(**{f: "" for f in fields})
    except (KeyError, IndexError, ValueError) as err:
        require(False, key, f"a template using only {{{'}, {'.join(fields)}}} ({err})", template)


@dataclass
class KnowledgeFilterConfig:
    """Which categories the model knows, asked as text only through the rollout engine.

    identify: the model describes each category (rollout.n descriptions), then is asked which of
    `choices` categories of the domain a description (its name hidden) fits; the score is the
    share identified right (chance: 1 / choices). A model that knows nothing about a category
    writes descriptions that fit any of them. choice: pick the category's description among
    others of its domain, from a file the user gives (JSONL: entity, domain, description), the
    knowledge probe's question (dprl.eval.knowledge_probe)."""

    enabled: bool = True
    kind: Literal["identify", "choice"] = "identify"
    descriptions_path: str = ""  # choice only
    describe_template: str = DESCRIBE_TEMPLATE
    choices: int = 4
    threshold: float = 0.5  # keep categories whose score is at least this
    rollout: RolloutConfig = field(default_factory=lambda: _sampling(2, 0.7, 64))

    def check(self, key: str) -> None:
        require(2 <= self.choices <= 8, f"{key}choices", "2 to 8 options", self.choices)
        require(0.0 <= self.threshold <= 1.0, f"{key}threshold", "a share in [0, 1]", self.threshold)
        require(self.kind != "choice" or self.descriptions_path.endswith(".jsonl"),
                f"{key}descriptions_path", "a .jsonl file of entity, domain, description rows "
                "(kind: choice)", self.descriptions_path)
        _check_template(self.describe_template, f"{key}describe_template", ("entity", "domain"))


@dataclass
class TeacherConfig:
    """Chains of thought by a teacher checkpoint, kept by rejection sampling: a chain counts when
    the box in its answer has IoU >= iou_threshold with the ground truth; up to `keep` distinct
    accepted chains per sample become SFT samples (asked with the plain R1 prompt)."""

    enabled: bool = True
    model_path: str = ""  # a local checkpoint; empty: the data engine's model.path
    template: str = TEACHER_TEMPLATE  # {question}, {entity}, {domain}
    keep: int = 1
    iou_threshold: float = 0.5
    rollout: RolloutConfig = field(default_factory=lambda: _sampling(4, 0.7, 256))

    def check(self, key: str) -> None:
        require(self.keep >= 1, f"{key}keep", "at least 1", self.keep)
        require(0.0 < self.iou_threshold <= 1.0, f"{key}iou_threshold", "a threshold in (0, 1]",
                self.iou_threshold)
        _check_template(self.template, f"{key}template", ("question", "entity", "domain"))


@dataclass
class DifficultyConfig:
    """The RL set keeps prompts the policy answers right sometimes but not always: of rollout.n
    answers (Acc at iou_threshold), between min_success and max_success (-1: n - 1) right."""

    enabled: bool = True
    policy_path: str = ""  # a local checkpoint; empty: the data engine's model.path
    min_success: int = 1
    max_success: int = -1
    iou_threshold: float = 0.5
    rollout: RolloutConfig = field(default_factory=lambda: _sampling(4, 1.0, 256))

    @property
    def success_range(self) -> tuple[int, int]:
        top = self.rollout.n - 1 if self.max_success < 0 else self.max_success
        return self.min_success, top

    def check(self, key: str) -> None:
        lo, hi = self.success_range
        require(0 <= lo <= hi <= self.rollout.n, f"{key}max_success",
                f"0 <= min_success <= max_success <= rollout.n={self.rollout.n} (got {lo}..{hi})",
                self.max_success)
        require(0.0 < self.iou_threshold <= 1.0, f"{key}iou_threshold", "a threshold in (0, 1]",
                self.iou_threshold)
