"""The GRPO reward: named reward terms, their weights, and how boxes are read.

The sections here are also the reward engine's runtime objects: a term is `dprl.rewards.Term`,
the parse options are `dprl.rewards.ParseOptions`, each defined and validated once."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from dprl.config.loader import ConfigError, require


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


@dataclass(frozen=True)
class RewardTermConfig:
    """One reward function by name (a built-in of dprl.rewards or one registered with
    `dprl.rewards.register_reward`) and its weight in the sum. Built-ins: format, iou,
    iou_threshold, iou_squared, acc, mc_letter; "acc@0.5" is shorthand for tau: 0.5.

    The same object is the reward's runtime term (`dprl.rewards.Term`): `reward` is the reward it
    names, `threshold` the tau it scores with, `label` its name in metrics."""

    name: str = "iou_threshold"
    weight: float = 1.0
    tau: float | None = None  # iou_threshold (default 0.8) and acc (default 0.5) only

    @property
    def reward(self) -> str:
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
        return f"{self.reward}@{tau:g}" if tau is not None else self.reward

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


# str mixins: a member equals (and hashes as) its word, so options compare with config strings.
class Scope(str, Enum):
    """Where the box is searched (dprl._C has a bool for it: ParseOptions.answer_only)."""

    ANSWER = "answer"
    ANYWHERE = "anywhere"


class Pick(str, Enum):
    """Which match wins (dprl._C: ParseOptions.last)."""

    LAST = "last"
    FIRST = "first"


class BoxFormat(str, Enum):
    """Box syntaxes; dprl._C.BoxFormat has the same member names (as flags)."""

    POINTS = "points"
    LIST = "list"
    TUPLE = "tuple"


class Coords(str, Enum):
    """Coordinate frames; dprl._C.Coords has the same member names."""

    AUTO = "auto"
    NORM1000 = "norm1000"
    FRACTION = "fraction"
    PIXELS = "pixels"


class Swapped(str, Enum):
    """What swapped corners become; dprl._C.Swapped has the same member names."""

    FIX = "fix"
    REJECT = "reject"


def _member(kind: type[Enum], field: str, value) -> Enum:
    """`value` (a member or its word) as a member of `kind`; ConfigError naming the field."""
    if type(value) is kind:  # the common case (defaults, copies): no lookup
        return value
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise ConfigError(f"{field} must be one of {allowed}; got {value!r}") from None


@dataclass(frozen=True)
class ParseOptions:
    """How `parse_boxes` reads a box out of a completion.

    scope:   "answer" searches between the first <answer> and the next </answer> (DeepPerception;
             no such pair means no box); "anywhere" searches the whole text.
    pick:    "last" (DeepPerception) or "first" of the non-overlapping matches, left to right.
    formats: which syntaxes count: "points" = Qwen2-VL (x1,y1),(x2,y2) with or without
             <|box_start|>..<|box_end|>; "list" = [x1, y1, x2, y2], which also covers JSON such as
             {"bbox_2d": [...], "label": ".."}; "tuple" = (x1, y1, x2, y2).
    coords:  "auto" = Qwen2-VL 0-1000, but a box whose four values all lie in [0, 1] is taken as
             fractions and scaled x1000 (dprl's rule; DeepPerception's scorer instead scales a
             box whose four coordinates sum to less than 4, see dprl.eval.official);
             "norm1000" = as written; "fraction" =
             always x1000; "pixels" = pixels of the resized model input (Qwen2.5-VL), rescaled to
             the original image (needs image_size, and input_size when the model saw a resized
             image). Results are 0-1000 for the first three and original-image pixels for the last.
    swapped: "fix" reorders x1 > x2 or y1 > y2; "reject" makes such a box no box.
    clamp:   clamp to [0, 1000], or to the original image with "pixels".
    A match whose coordinates do not fit a finite float32 (1e308, inf, huge digit strings) is
    no box (a NaN row), whatever the other options.
    """

    scope: Scope = Scope.ANSWER
    pick: Pick = Pick.LAST
    formats: tuple[BoxFormat, ...] = (BoxFormat.POINTS, BoxFormat.LIST, BoxFormat.TUPLE)
    coords: Coords = Coords.AUTO
    swapped: Swapped = Swapped.FIX
    clamp: bool = False

    def __post_init__(self) -> None:
        # Words or members in, members out: everything downstream compares members.
        for name, kind in (("scope", Scope), ("pick", Pick), ("coords", Coords),
                           ("swapped", Swapped)):
            object.__setattr__(self, name, _member(kind, name, getattr(self, name)))
        formats = (self.formats,) if isinstance(self.formats, str) else tuple(self.formats)
        try:
            members = tuple(f if type(f) is BoxFormat else BoxFormat(f) for f in formats)
        except ValueError:
            members = ()
        if not members:
            allowed = ", ".join(f.value for f in BoxFormat)
            raise ConfigError(f"formats must be a non-empty subset of {allowed}; "
                             f"got {self.formats!r}")
        object.__setattr__(self, "formats", members)
        if not isinstance(self.clamp, bool):
            raise TypeError(f"clamp must be True or False, got {self.clamp!r}")


def _deepperception_terms() -> list:
    return [RewardTermConfig("format", 1.0), RewardTermConfig("iou_threshold", 1.0, 0.8)]


@dataclass
class RewardConfig:
    """The GRPO reward: a weighted sum of named reward functions (DeepPerception: format +
    IoU thresholded at 0.8, boxes read from inside <answer>, last match). dprl's versions differ
    at the edges: iou_threshold pays at IoU >= 0.8 (the original: > 0.8), the format rule is
    anchored to the whole text, and its box half can fire (the original's never did)."""

    functions: list[RewardTermConfig] = field(default_factory=_deepperception_terms)
    parse: ParseOptions = field(default_factory=ParseOptions)

    def check(self, key: str) -> None:
        require(len(self.functions) > 0, f"{key}functions", "at least one reward function",
                 self.functions)
        for i, term in enumerate(self.functions):
            term.check(f"{key}functions[{i}].")
