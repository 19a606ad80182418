"""Options of box parsing. The knobs are defined and validated once, in the config
(dprl.config.rewards.ParseOptions, the `parse:` section of a reward or eval config); their words
("answer", "pixels", ...) are the values of its enums, whose member names dprl._C's enums share.
"""
from __future__ import annotations

from dprl.config.rewards import BoxFormat, Coords, ParseOptions, Pick, Scope, Swapped

__all__ = ["BoxFormat", "Coords", "ParseOptions", "Pick", "Scope", "Swapped", "make_options"]

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
