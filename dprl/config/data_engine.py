"""`dprl data-engine`: fine-grained recognition data on disk -> knowledge-filtered,
teacher-reasoned KVG samples. The data half (where the entity pictures come from, how they are
composed into multi-entity grounding samples) and the model-driven stages (knowledge filtering,
teacher chains of thought, the RL set's difficulty filter; each samples with its own `rollout:`
section), and DataEngineConfig, which runs them in order."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from dprl.config.loader import require
from dprl.config.model import ModelConfig
from dprl.config.rollout import RolloutConfig
from dprl.config.world import SEEN_DOMAINS

SOURCE_KINDS = ("image_folder", "cub", "fgvc_aircraft", "hf_dataset")
# Splits each layout defines; "" for image_folder and cub means "every image".
_CUB_SPLITS = ("", "train", "test")
_FGVC_SPLITS = ("train", "val", "trainval", "test")


@dataclass
class EngineSourceConfig:
    """One fine-grained recognition data set already on disk (nothing is ever downloaded).

    kind and path:
      image_folder   one folder per category (torchvision ImageFolder's / `datasets`' imagefolder
                     layout); `split` names a subfolder of `path` (empty: `path` is the tree)
      cub            CUB-200-2011: the folder holding images.txt, classes.txt,
                     image_class_labels.txt, bounding_boxes.txt (train_test_split.txt for a split)
      fgvc_aircraft  FGVC-Aircraft: the folder holding data/ (images_variant_<split>.txt,
                     variants.txt, images_box.txt, images/), or data/ itself
      hf_dataset     a `datasets` folder (save_to_disk) or a local .parquet/.json/.jsonl/.csv/.arrow
                     file with an image column and a label column (+ an optional box column)
    Every picture of the source is an entity of `domain`, its category the label."""

    kind: Literal["image_folder", "cub", "fgvc_aircraft", "hf_dataset"] = "image_folder"
    path: str = ""
    domain: str = ""
    split: str = ""
    # Crop each picture to its object box where the source has one (cub, fgvc_aircraft, an
    # hf_dataset with box_column); otherwise, and when false, the central `crop` fraction of the
    # picture (1.0: all of it) is the entity.
    use_boxes: bool = True
    crop: float = 1.0
    max_per_category: int = 0  # the first N usable pictures per category, in the source's order; 0: all
    # A category with fewer usable pictures is skipped (and counted). 1 keeps a category with a
    # single picture: each composite naming it then shows that picture.
    min_per_category: int = 1
    # hf_dataset only: the columns, and how a box is written (x1 y1 x2 y2, or COCO's x y w h).
    image_column: str = "image"
    label_column: str = "label"
    box_column: str = ""
    box_format: Literal["xyxy", "xywh"] = "xyxy"

    def check(self, key: str) -> None:
        require(bool(self.path), f"{key}path", "the source's folder or file on disk", self.path)
        require(os.path.exists(os.path.expanduser(self.path)), f"{key}path",
                 "an existing folder or file (sources are read from disk, never downloaded)", self.path)
        require(bool(self.domain.strip()), f"{key}domain", "a domain name (e.g. aircraft)", self.domain)
        if self.kind == "cub":
            require(self.split in _CUB_SPLITS, f"{key}split", f"one of {_CUB_SPLITS} ('': all images)",
                     self.split)
        elif self.kind == "fgvc_aircraft":
            require(self.split in _FGVC_SPLITS, f"{key}split", f"one of {_FGVC_SPLITS}", self.split)
        require(0.0 < self.crop <= 1.0, f"{key}crop", "a central fraction in (0, 1]", self.crop)
        require(self.max_per_category >= 0, f"{key}max_per_category", "a count >= 0 (0: all)",
                 self.max_per_category)
        require(self.min_per_category >= 1, f"{key}min_per_category", "a count >= 1",
                 self.min_per_category)
        if self.kind == "hf_dataset":
            require(bool(self.image_column), f"{key}image_column", "a column name", self.image_column)
            require(bool(self.label_column), f"{key}label_column", "a column name", self.label_column)


@dataclass
class LayoutWeightsConfig:
    """How often each layout is drawn (relative weights; 0 turns a layout off).
    grid: rows x columns of cells; row: side by side; column: stacked; free: anywhere, no overlap."""

    grid: float = 1.0
    row: float = 1.0
    column: float = 1.0
    free: float = 1.0

    def check(self, key: str) -> None:
        weights = (self.grid, self.row, self.column, self.free)
        for name, w in zip(("grid", "row", "column", "free"), weights):
            require(w >= 0, f"{key}{name}", "a weight >= 0", w)
        require(sum(weights) > 0, f"{key}grid", "at least one layout with a weight > 0", weights)


@dataclass
class CompositionConfig:
    """Multi-entity pictures: min..max entities of distinct categories of one domain, one of them
    named by the question."""

    samples_per_domain: int = 100
    min_entities: int = 2
    max_entities: int = 4
    # Chance that each distractor is the category most confusable with the target (of those left)
    # rather than any other; used only with a `confusion` file (JSON or CSV of category pairs and
    # scores, see dprl.data.engine.compose.read_confusion).
    similarity: float = 0.5
    confusion: str = ""
    layouts: LayoutWeightsConfig = field(default_factory=LayoutWeightsConfig)
    # The composite's pixel budget (Qwen2-VL's processor max_pixels). Its sides are multiples of
    # `size_multiple` (28 = Qwen2-VL's 14-pixel patches merged 2x2): within the processor's
    # budget it is then not resized, and pixel boxes stay exact in what the model sees.
    max_pixels: int = 448 * 448
    size_multiple: int = 28
    # Space kept free around each entity, as a fraction of its cell's shorter side (free layout:
    # of the mean entity side), so neighbouring entities never touch.
    margin: float = 0.04
    # Each entity fills a random fraction in [min_scale, 1] of the room its cell allows.
    min_scale: float = 0.7
    background: list[int] = field(default_factory=lambda: [255, 255, 255])
    image_format: Literal["png", "jpg"] = "jpg"
    jpeg_quality: int = 95

    def check(self, key: str) -> None:
        require(self.samples_per_domain >= 0, f"{key}samples_per_domain", "a count >= 0",
                 self.samples_per_domain)
        require(2 <= self.min_entities <= self.max_entities <= 6, f"{key}min_entities",
                 "2 <= min_entities <= max_entities <= 6", (self.min_entities, self.max_entities))
        require(0.0 <= self.similarity <= 1.0, f"{key}similarity", "a probability in [0, 1]",
                 self.similarity)
        if self.confusion:
            require(self.confusion.endswith((".json", ".csv")), f"{key}confusion",
                     "a .json or .csv file", self.confusion)
            require(os.path.isfile(os.path.expanduser(self.confusion)), f"{key}confusion",
                     "an existing file", self.confusion)
        require(self.size_multiple >= 1, f"{key}size_multiple", "a positive pixel count",
                 self.size_multiple)
        require(self.max_pixels >= (2 * self.size_multiple) ** 2, f"{key}max_pixels",
                 f"at least (2 x size_multiple)^2 = {(2 * self.size_multiple) ** 2}", self.max_pixels)
        require(0.0 <= self.margin < 0.4, f"{key}margin", "a fraction in [0, 0.4)", self.margin)
        require(0.0 < self.min_scale <= 1.0, f"{key}min_scale", "a fraction in (0, 1]", self.min_scale)
        require(len(self.background) == 3 and all(0 <= v <= 255 for v in self.background),
                 f"{key}background", "an RGB triple of 0-255 values", self.background)
        require(1 <= self.jpeg_quality <= 100, f"{key}jpeg_quality", "1 to 100", self.jpeg_quality)


@dataclass
class EngineDataConfig:
    """Sources -> composition -> KVG-Bench-schema samples, written as `dprl world` writes them:
    `<output_dir>/kvg_<split>.jsonl` and `<output_dir>/images/kvg_<split>/`. Deterministic for
    `seed`, whatever the number of workers."""

    output_dir: str = "data/engine"
    split: str = "train"  # names the output file; the samples' `split` field
    seed: int = 0
    workers: int = 0  # processes that read and compose pictures; 0: one per CPU core
    sources: list[EngineSourceConfig] = field(default_factory=list)
    composition: CompositionConfig = field(default_factory=CompositionConfig)
    # A sample's `seen` field: whether its domain is one models are trained on (KVG-Bench's split).
    seen_domains: list[str] = field(default_factory=lambda: list(SEEN_DOMAINS))

    def check(self, key: str) -> None:
        require(bool(self.output_dir), f"{key}output_dir", "a directory path", self.output_dir)
        require(bool(self.split) and "/" not in self.split, f"{key}split",
                 "a split name without '/' (it names the output file)", self.split)
        require(self.workers >= 0, f"{key}workers", "a count >= 0 (0: one per CPU core)", self.workers)
        # No source is valid here (a config that holds this section with its stage off must
        # load); build_samples refuses to run without one.
        for i, source in enumerate(self.sources):
            source.check(f"{key}sources[{i}].")


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
    writes descriptions that fit any of them. Needs nothing but the category names.
    look / choice: the knowledge probe's questions (dprl.eval.knowledge_probe) over a knowledge
    file (JSONL: entity, domain, and `attributes` for look or `description` for choice): an
    open "what does it look like" scored by the attributes it names, or the right description
    among others of its domain by letter. The score is the share of rollout.n answers right."""

    enabled: bool = True
    kind: Literal["identify", "look", "choice"] = "identify"
    knowledge_path: str = ""  # look and choice: the knowledge file
    describe_template: str = DESCRIBE_TEMPLATE  # identify's and look's question
    choices: int = 4
    threshold: float = 0.5  # keep categories whose score is at least this
    rollout: RolloutConfig = field(default_factory=lambda: _sampling(2, 0.7, 64))

    def check(self, key: str) -> None:
        require(2 <= self.choices <= 8, f"{key}choices", "2 to 8 options", self.choices)
        require(0.0 <= self.threshold <= 1.0, f"{key}threshold", "a share in [0, 1]", self.threshold)
        # An empty path is refused when the engine starts (a pipeline fills it in).
        require(not self.knowledge_path or self.knowledge_path.endswith(".jsonl"),
                f"{key}knowledge_path", f"a .jsonl knowledge file of entity, domain and "
                f"{'attributes' if self.kind == 'look' else 'description'} rows (kind: {self.kind})",
                self.knowledge_path)
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


@dataclass
class DataEngineConfig:
    """`dprl data-engine`: sources -> knowledge filter -> composition -> teacher chains of thought
    (the SFT set) and the difficulty filter (the RL set). Everything goes under `output_dir`:
    kvg_composed.jsonl (every composite, no chain of thought), kvg_sft.jsonl (for `dprl sft`),
    kvg_rl.jsonl (for `dprl grpo`), images/, knowledge_scores.jsonl, skipped.jsonl, report.json
    and report.md. `data.output_dir` and `data.split` are set by the engine."""

    output_dir: str = "runs/data_engine"
    # The model the data is for: it is asked what it knows, and it is the default teacher and
    # policy. A local checkpoint (nothing is downloaded).
    model: ModelConfig = field(default_factory=ModelConfig)
    data: EngineDataConfig = field(default_factory=EngineDataConfig)
    # Share of each domain's composites that go to the RL set instead of the SFT set.
    rl_share: float = 0.5
    knowledge: KnowledgeFilterConfig = field(default_factory=KnowledgeFilterConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    difficulty: DifficultyConfig = field(default_factory=DifficultyConfig)
    batch_size: int = 64  # prompts per rollout-engine call

    @property
    def needs_model(self) -> bool:
        """Whether some enabled stage asks `model.path` (checked when the engine starts, since a
        pipeline sets it for its data_engine stage)."""
        return (self.knowledge.enabled or (self.teacher.enabled and not self.teacher.model_path)
                or (self.difficulty.enabled and not self.difficulty.policy_path))

    def check(self, key: str) -> None:
        require(bool(self.output_dir), f"{key}output_dir", "a directory path", self.output_dir)
        require(0.0 <= self.rl_share <= 1.0, f"{key}rl_share", "a share in [0, 1]", self.rl_share)
        require(self.batch_size >= 1, f"{key}batch_size", "at least 1", self.batch_size)
        for name, path in (("teacher.model_path", self.teacher.model_path),
                           ("difficulty.policy_path", self.difficulty.policy_path)):
            if path:
                expanded = os.path.expanduser(path)
                require(os.path.isfile(os.path.join(expanded, "config.json")), f"{key}{name}",
                        "a local Hugging Face checkpoint directory holding config.json", path)
