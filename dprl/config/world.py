"""`dprl world`: the synthetic fine-grained world's settings and its domain names."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dprl.config.loader import require

# KVG-Bench's split: models are trained on the first five, the last five are held out. The
# names live here so that the config can check them and the world (dprl.data.domains) can draw
# them without either importing the other's side.
SEEN_DOMAINS = ("aircraft", "car", "reptile", "bird", "food")
UNSEEN_DOMAINS = ("dog", "mollusc", "mammal", "flower", "landmark")
ALL_DOMAINS = SEEN_DOMAINS + UNSEEN_DOMAINS
# The world's named body colours (their RGB values are drawing, in dprl.data.domains); each
# colour comes with two marks, so a domain has at most twice as many categories.
COLOUR_NAMES = ("red", "orange", "yellow", "green", "teal", "blue", "purple", "pink")


@dataclass
class WorldConfig:
    """`dprl world`: the synthetic fine-grained world (dprl/data). Deterministic for `seed`.

    Grounding samples of the seen domains go to train/val/test, those of the unseen domains to
    test only (as in KVG-Bench); FGVR multiple-choice samples likewise; the text-only knowledge
    corpus covers every domain."""

    output_dir: str = "data/world"
    seed: int = 0
    seen_domains: list[str] = field(default_factory=lambda: list(SEEN_DOMAINS))
    unseen_domains: list[str] = field(default_factory=lambda: list(UNSEEN_DOMAINS))
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
        require(bool(self.output_dir), f"{key}output_dir", "a directory path", self.output_dir)
        domains = self.seen_domains + self.unseen_domains
        for name in ("seen_domains", "unseen_domains"):
            for d in getattr(self, name):
                require(d in ALL_DOMAINS, f"{key}{name}", f"domains from {ALL_DOMAINS}", d)
        require(len(set(domains)) == len(domains), f"{key}unseen_domains",
                 "no domain both seen and unseen or listed twice", domains)
        require(len(self.seen_domains) > 0, f"{key}seen_domains", "at least one domain",
                 self.seen_domains)
        require(2 <= self.categories_per_domain <= 2 * len(COLOUR_NAMES), f"{key}categories_per_domain",
                 f"2 to {2 * len(COLOUR_NAMES)} (colours x marks)", self.categories_per_domain)
        require(self.image_size >= 28, f"{key}image_size", "at least 28 pixels", self.image_size)
        require(1 <= self.min_entities <= self.max_entities, f"{key}min_entities",
                 f"between 1 and max_entities={self.max_entities}", self.min_entities)
        require(self.max_entities <= min(6, self.categories_per_domain), f"{key}max_entities",
                 f"at most 6 and at most categories_per_domain={self.categories_per_domain} "
                 "(entities in a scene are of distinct categories)", self.max_entities)
        require(0 < self.min_entity_size <= self.max_entity_size <= 0.6, f"{key}min_entity_size",
                 "0 < min_entity_size <= max_entity_size <= 0.6", (self.min_entity_size, self.max_entity_size))
        require(self.min_entity_size * self.image_size >= 8, f"{key}min_entity_size",
                 f"entities of at least 8 pixels (image_size={self.image_size})", self.min_entity_size)
        if self.layout == "grid":
            require(2 <= self.grid_size <= 3, f"{key}grid_size", "2 or 3 cells per side", self.grid_size)
            require(self.max_entities <= self.grid_size ** 2, f"{key}max_entities",
                     f"at most grid_size**2 = {self.grid_size ** 2} (one entity per cell)",
                     self.max_entities)
            require(self.max_entity_size * self.grid_size <= 0.9, f"{key}max_entity_size",
                     f"at most {0.9 / self.grid_size:.3f} with grid_size={self.grid_size} (an entity "
                     "fits in its cell with a margin)", self.max_entity_size)
        require(0.0 <= self.cell_jitter <= 1.0, f"{key}cell_jitter", "a fraction in [0, 1]",
                 self.cell_jitter)
        require(0.0 <= self.position_tint <= 1.0, f"{key}position_tint", "a strength in [0, 1]",
                 self.position_tint)
        require(0.0 <= self.distractor_similarity <= 1.0, f"{key}distractor_similarity",
                 "a probability in [0, 1]", self.distractor_similarity)
        for name in ("train_per_domain", "val_per_domain", "test_per_domain",
                     "fgvr_train_per_domain", "fgvr_test_per_domain", "workers"):
            require(getattr(self, name) >= 0, f"{key}{name}", "a count >= 0", getattr(self, name))
        require(2 <= self.fgvr_choices <= min(6, self.categories_per_domain), f"{key}fgvr_choices",
                 f"2 to min(6, categories_per_domain={self.categories_per_domain})", self.fgvr_choices)
