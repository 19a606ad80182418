"""Options of box parsing: the one place in dprl.rewards where the knobs are defined and validated.

The knobs' words ("answer", "pixels", ...) are the values of the enums below, so YAML configs and
keyword arguments spell them as before. dprl._C binds C++ enums with the same member names;
`ParseOptions.to_native` is the one function that maps these options onto dprl._C.ParseOptions.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import reduce
from operator import or_
from types import ModuleType


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
    """`value` (a member or its word) as a member of `kind`; ValueError naming the field."""
    if type(value) is kind:  # the common case (defaults, copies): no lookup
        return value
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise ValueError(f"{field} must be one of {allowed}; got {value!r}") from None


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
            raise ValueError(f"formats must be a non-empty subset of {allowed}; "
                             f"got {self.formats!r}")
        object.__setattr__(self, "formats", members)
        if not isinstance(self.clamp, bool):
            raise TypeError(f"clamp must be True or False, got {self.clamp!r}")

    def to_native(self, C: ModuleType):
        """These options as C.ParseOptions, C being the dprl._C module: the one place the two are
        mapped. Enum members map by name (tests/rewards/test_reward_backend.py holds the names
        equal); scope and pick are bools on the C++ side."""
        return C.ParseOptions(
            answer_only=self.scope is Scope.ANSWER,
            last=self.pick is Pick.LAST,
            formats=reduce(or_, (C.BoxFormat[f.name] for f in self.formats)),
            coords=C.Coords[self.coords.name],
            swapped=C.Swapped[self.swapped.name],
            clamp=self.clamp,
        )


_DEFAULT = ParseOptions()  # frozen: one shared instance serves every call without options


def make_options(options: ParseOptions | None = None, **kwargs) -> ParseOptions:
    """A ParseOptions from an existing one and/or keyword overrides; unknown keys raise."""
    base = options or _DEFAULT
    if not kwargs:
        return base
    known = set(ParseOptions.__dataclass_fields__)
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(f"unknown parse option {unknown[0]!r}; valid options are: "
                        f"{', '.join(sorted(known))}")
    fields = {k: getattr(base, k) for k in known}
    fields.update(kwargs)
    return ParseOptions(**fields)
