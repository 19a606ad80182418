"""Options of box parsing, validated once and shared by the C++ path and the reference."""
from __future__ import annotations

from dataclasses import dataclass

# Box syntaxes and the bit each has in the C++ mask (csrc/box_parse.h).
FORMAT_BITS = {"points": 1, "list": 2, "tuple": 4}
COORDS = ("auto", "norm1000", "fraction", "pixels")
SWAPPED = ("fix", "reject")
SCOPES = ("answer", "anywhere")
PICKS = ("last", "first")


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

    scope: str = "answer"
    pick: str = "last"
    formats: tuple[str, ...] = ("points", "list", "tuple")
    coords: str = "auto"
    swapped: str = "fix"
    clamp: bool = False

    def __post_init__(self) -> None:
        for name, allowed in (("scope", SCOPES), ("pick", PICKS), ("coords", COORDS),
                              ("swapped", SWAPPED)):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        if isinstance(self.formats, str):
            object.__setattr__(self, "formats", (self.formats,))
        object.__setattr__(self, "formats", tuple(self.formats))
        bad = [f for f in self.formats if f not in FORMAT_BITS]
        if bad or not self.formats:
            raise ValueError(f"formats must be a non-empty subset of {', '.join(FORMAT_BITS)}; "
                             f"got {self.formats!r}")
        if not isinstance(self.clamp, bool):
            raise TypeError(f"clamp must be True or False, got {self.clamp!r}")

    @property
    def format_mask(self) -> int:
        mask = 0
        for f in self.formats:
            mask |= FORMAT_BITS[f]
        return mask


def make_options(options: ParseOptions | None = None, **kwargs) -> ParseOptions:
    """A ParseOptions from an existing one and/or keyword overrides; unknown keys raise."""
    base = options or ParseOptions()
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
