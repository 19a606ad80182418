"""The GRPO reward: named reward terms, their weights, and how boxes are read."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from dprl.config.loader import require


# The reward vocabulary a config is checked against. The built-ins' scorers live in
# dprl.rewards; the names live here so that a config naming an unknown reward fails at load,
# before any model is read. REGISTERED_REWARDS holds researchers' own functions by name
# (dprl.rewards.register_reward adds them), so a config may name one like a built-in.
BUILTIN_REWARDS = ("format", "iou", "iou_threshold", "iou_squared", "acc", "mc_letter")
DEFAULT_TAU = {"iou_threshold": 0.8, "acc": 0.5}  # the rewards that take a threshold
REGISTERED_REWARDS: dict[str, Callable[..., list]] = {}


def reward_names() -> list[str]:
    """Every name a reward term may use: the built-ins, then the registered ones."""
    return list(BUILTIN_REWARDS) + sorted(REGISTERED_REWARDS)


@dataclass
class RewardTermConfig:
    """One reward function by name (a built-in of dprl.rewards or one registered with
    `dprl.rewards.register_reward`) and its weight in the sum. Built-ins: format, iou,
    iou_threshold, iou_squared, acc, mc_letter; "acc@0.5" is shorthand for tau: 0.5.

    The same object is the reward's runtime term (`dprl.rewards.Term`): `kind` is the reward it
    names, `threshold` the tau it scores with, `label` its name in metrics."""

    name: str = "iou_threshold"
    weight: float = 1.0
    tau: float | None = None  # iou_threshold (default 0.8) and acc (default 0.5) only

    @property
    def kind(self) -> str:
        return self.name.partition("@")[0]

    @property
    def threshold(self) -> float | None:
        """tau, or the number after '@' in the name, or the reward's default (None: none)."""
        if self.tau is not None:
            return self.tau
        base, at, value = self.name.partition("@")
        return float(value) if at else DEFAULT_TAU.get(base)

    @property
    def label(self) -> str:
        tau = self.threshold
        return f"{self.kind}@{tau:g}" if tau is not None else self.kind

    def check(self, key: str = "") -> None:
        # The messages name the dotted key when loaded from a config, and the reward either way.
        base, at, value = self.name.partition("@")
        require(bool(base) and base.replace("_", "a").replace(".", "a").replace(":", "a").isalnum(),
                f"{key}name", "a reward name such as iou_threshold or acc@0.5", self.name)
        names = reward_names()
        require(base in names, f"{key}name", f"a built-in or registered reward ({', '.join(names)}; "
                f"register your own with dprl.rewards.register_reward): unknown reward {base!r}",
                self.name)
        tau_in_name = None
        if at:
            try:
                tau_in_name = float(value)
            except ValueError:
                require(False, f"{key}name", "a number after '@' (e.g. acc@0.5)", self.name)
        require(tau_in_name is None or self.tau is None or tau_in_name == self.tau, f"{key}tau",
                f"no second threshold: reward {self.name!r} names its own", self.tau)
        tau = self.tau if self.tau is not None else tau_in_name
        require(tau is None or base in DEFAULT_TAU, f"{key}tau",
                f"none: reward {base!r} takes no threshold (only {', '.join(DEFAULT_TAU)})", tau)
        require(tau is None or 0.0 <= tau <= 1.0, f"{key}tau",
                f"a threshold in [0, 1] (reward {self.name!r}: tau must be in [0, 1])", tau)
        require(math.isfinite(self.weight), f"{key}weight",
                f"a finite number (reward {self.name!r}: weight must be finite)", self.weight)


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
        require(len(self.formats) > 0, f"{key}formats", "at least one box format", self.formats)


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
        require(len(self.functions) > 0, f"{key}functions", "at least one reward function",
                 self.functions)
        for i, term in enumerate(self.functions):
            term.check(f"{key}functions[{i}].")
