"""The synthetic fine-grained world: domains, their made-up categories, and how each is drawn.

Ten domains mirror KVG-Bench's five seen and five unseen ones. A domain is a body plan (every
entity of the domain has the same parts); its categories differ only in two attributes, the body
colour and one domain-specific mark (striped back, dark wings, white roof, ...), which a chain of
thought names in words every domain shares ("dark marks"). Both attributes are drawn large on
purpose: the tiny model sees a 112x112 picture as 8x8 patches of 14 pixels,
so a difference has to cover a good part of a patch to be visible at all. Category names are
made-up words, so only the knowledge base links a name to an appearance.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from dprl.config.world import ALL_DOMAINS, COLOUR_NAMES, SEEN_DOMAINS, UNSEEN_DOMAINS  # noqa: F401

# The named body colours' RGB, in COLOUR_NAMES' order: far apart, so two of them never look
# alike at low resolution.
COLOURS = dict(zip(COLOUR_NAMES, (
    (205, 35, 40),  # red
    (240, 140, 20),  # orange
    (235, 205, 35),  # yellow
    (40, 155, 55),  # green
    (25, 150, 150),  # teal
    (40, 70, 205),  # blue
    (135, 55, 185),  # purple
    (240, 120, 180),  # pink
), strict=True))

DARK = (35, 30, 30)
WHITE = (250, 250, 250)

# Per domain: width/height ratio of an entity's box, and the field-guide wording of its two
# marks (plain, marked). What one *sees* is said in words shared by every domain ("plain",
# "dark marks", "white marks", see MARK_LOOKS): a chain of thought that reads "dark wings" on
# aircraft and "banded shell" on molluscs has no word for a mark in a domain it never grounded,
# while "dark marks" names the same visual fact (a dark patch on the body colour) everywhere,
# so the skill of seeing it can carry to unseen domains.
_MARKS = {
    "aircraft": (1.4, "wings the same colour as the body", "black wings"),
    "car": (1.4, "a roof the same colour as the body", "a white roof"),
    "reptile": (1.6, "an unmarked back", "dark stripes across the back"),
    "bird": (1.0, "a head the same colour as the body", "a black head"),
    "food": (1.0, "a smooth top", "dark dots on top"),
    "dog": (1.3, "a coat of one colour", "a large white belly patch"),
    "mollusc": (1.0, "a shell of one colour", "dark rings on the shell"),
    "mammal": (1.3, "fur of one colour", "big white spots"),
    "flower": (1.0, "petals of one colour", "a black centre"),
    "landmark": (0.7, "a flat top", "a black dome on top"),
}
# The tone of each domain's mark as drawn (DARK or WHITE below).
_MARK_TONE = {"aircraft": "dark", "car": "white", "reptile": "dark", "bird": "dark", "food": "dark",
              "dog": "white", "mollusc": "dark", "mammal": "white", "flower": "dark", "landmark": "dark"}
# Every short mark word a chain of thought can use.
MARK_LOOKS = ("plain", "dark marks", "white marks")

_SYLLABLES = ("ka", "lo", "mi", "ru", "ze", "ta", "vo", "ni", "pe", "sha", "dri", "qu", "fe",
              "bo", "lin", "tor", "wex", "gal", "mor", "zun", "ish", "ul", "ax", "en")


@dataclass(frozen=True)
class Category:
    """One subordinate category: a made-up name bound to a colour and a mark of its domain."""

    name: str
    domain: str
    colour: str
    mark: int  # 0 or 1: which of the domain's two marks

    @property
    def mark_short(self) -> str:
        """The mark in the words shared by all domains: "plain", "dark marks" or "white marks"."""
        return f"{_MARK_TONE[self.domain]} marks" if self.mark else "plain"

    @property
    def mark_long(self) -> str:
        return _MARKS[self.domain][1 + self.mark]

    @property
    def short(self) -> str:
        """What one sees, in two or three words: "red dark marks"."""
        return f"{self.colour} {self.mark_short}"

    def description(self) -> str:
        """A field-guide entry: the features that tell this category from its domain's others."""
        return (f"The {self.name} is a {self.domain} with a {self.colour} body and "
                f"{self.mark_long}.")


def aspect(domain: str) -> float:
    return _MARKS[domain][0]


def make_name(rng: random.Random, taken: set[str]) -> str:
    """A pronounceable made-up word of two or three syllables, not already used."""
    while True:
        word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((2, 2, 3))))
        if word not in taken and len(word) >= 4:
            taken.add(word)
            return word


def make_categories(domains: list[str], per_domain: int, seed: int) -> dict[str, list[Category]]:
    """`per_domain` categories for each domain, deterministic for `seed`.

    Colours come in pairs: each chosen colour appears with both marks, so for every category
    there is a distractor of the same colour that only the mark tells apart.
    """
    rng = random.Random(f"categories-{seed}")
    taken: set[str] = set()
    out = {}
    for domain in domains:
        n_colours = (per_domain + 1) // 2
        colours = rng.sample(sorted(COLOURS), n_colours)
        combos = [(c, m) for c in colours for m in (0, 1)][:per_domain]
        out[domain] = [Category(make_name(rng, taken), domain, c, m) for c, m in combos]
    return out


# ---------------------------------------------------------------------------------------------
# Drawing: each body plan fills its box (x0, y0, x1, y1) edge to edge, so the box is exact.
# ---------------------------------------------------------------------------------------------
def _frac(box, fx0, fy0, fx1, fy1):
    """The sub-box at fractions of `box`."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    return (x0 + fx0 * w, y0 + fy0 * h, x0 + fx1 * w, y0 + fy1 * h)


def _aircraft(d, box, body, mark, flip):
    wing = DARK if mark else body
    d.ellipse(_frac(box, 0.0, 0.35, 1.0, 0.65), fill=body)  # fuselage, nose to tail
    d.rectangle(_frac(box, 0.4, 0.0, 0.6, 1.0), fill=wing)  # wings, tip to tip
    tail = (0.02, 0.2, 0.14, 0.8) if not flip else (0.86, 0.2, 0.98, 0.8)
    d.rectangle(_frac(box, *tail), fill=wing)


def _car(d, box, body, mark, flip):
    d.rectangle(_frac(box, 0.0, 0.35, 1.0, 0.8), fill=body)  # body
    d.rectangle(_frac(box, 0.2, 0.0, 0.8, 0.4), fill=WHITE if mark else body)  # roof / cabin
    for fx in (0.08, 0.62):
        d.ellipse(_frac(box, fx, 0.6, fx + 0.3, 1.0), fill=DARK)  # wheels


def _reptile(d, box, body, mark, flip):
    head = (0.8, 0.3, 1.0, 0.7) if not flip else (0.0, 0.3, 0.2, 0.7)
    d.ellipse(_frac(box, 0.0, 0.25, 0.9, 0.75) if not flip else _frac(box, 0.1, 0.25, 1.0, 0.75),
              fill=body)
    d.ellipse(_frac(box, *head), fill=body)
    for fx in (0.2, 0.6):  # legs
        d.rectangle(_frac(box, fx, 0.0, fx + 0.08, 1.0), fill=body)
    if mark:
        for fx in (0.25, 0.45, 0.65):
            d.rectangle(_frac(box, fx, 0.25, fx + 0.09, 0.75), fill=DARK)


def _bird(d, box, body, mark, flip):
    d.ellipse(_frac(box, 0.0, 0.3, 0.8, 1.0) if not flip else _frac(box, 0.2, 0.3, 1.0, 1.0), fill=body)
    hx = 0.45 if not flip else 0.05
    d.ellipse(_frac(box, hx, 0.0, hx + 0.5, 0.5), fill=DARK if mark else body)
    bx = (0.88, 0.15, 1.0, 0.3) if not flip else (0.0, 0.15, 0.12, 0.3)
    d.rectangle(_frac(box, *bx), fill=(240, 150, 30))  # beak


def _food(d, box, body, mark, flip):
    d.ellipse(_frac(box, 0.0, 0.0, 1.0, 1.0), fill=WHITE, outline=DARK)  # plate
    d.ellipse(_frac(box, 0.12, 0.12, 0.88, 0.88), fill=body)
    if mark:
        for fx, fy in ((0.3, 0.3), (0.55, 0.35), (0.35, 0.58), (0.58, 0.6)):
            d.ellipse(_frac(box, fx, fy, fx + 0.14, fy + 0.14), fill=DARK)


def _dog(d, box, body, mark, flip):
    d.rectangle(_frac(box, 0.1, 0.3, 0.8, 0.75) if not flip else _frac(box, 0.2, 0.3, 0.9, 0.75), fill=body)
    hx = 0.65 if not flip else 0.0
    d.rectangle(_frac(box, hx, 0.0, hx + 0.35, 0.4), fill=body)  # head
    for fx in (0.15, 0.65):
        d.rectangle(_frac(box, fx, 0.6, fx + 0.12, 1.0), fill=body)  # legs
    if mark:
        d.rectangle(_frac(box, 0.3, 0.5, 0.7, 0.75), fill=WHITE)


def _mollusc(d, box, body, mark, flip):
    ring = DARK if mark else body
    d.ellipse(_frac(box, 0.0, 0.0, 1.0, 1.0), fill=ring)
    d.ellipse(_frac(box, 0.15, 0.15, 0.85, 0.85), fill=body)
    d.ellipse(_frac(box, 0.3, 0.3, 0.7, 0.7), fill=ring)
    d.ellipse(_frac(box, 0.42, 0.42, 0.58, 0.58), fill=body)


def _mammal(d, box, body, mark, flip):
    d.ellipse(_frac(box, 0.0, 0.25, 0.8, 1.0) if not flip else _frac(box, 0.2, 0.25, 1.0, 1.0), fill=body)
    hx = 0.6 if not flip else 0.0
    d.ellipse(_frac(box, hx, 0.0, hx + 0.4, 0.5), fill=body)  # head
    if mark:
        for fx, fy in ((0.15, 0.45), (0.4, 0.6), (0.22, 0.72)) if not flip else ((0.6, 0.45), (0.35, 0.6), (0.55, 0.72)):
            d.ellipse(_frac(box, fx, fy, fx + 0.2, fy + 0.2), fill=WHITE)


def _flower(d, box, body, mark, flip):
    for fx, fy in ((0.25, 0.0), (0.0, 0.25), (0.5, 0.25), (0.25, 0.5)):
        d.ellipse(_frac(box, fx, fy, fx + 0.5, fy + 0.5), fill=body)  # petals
    if mark:  # a plain flower has no centre of another colour: white would read as a mark
        d.ellipse(_frac(box, 0.32, 0.32, 0.68, 0.68), fill=DARK)


def _landmark(d, box, body, mark, flip):
    d.rectangle(_frac(box, 0.0, 0.75, 1.0, 1.0), fill=body)  # base
    d.rectangle(_frac(box, 0.2, 0.3, 0.8, 0.75), fill=body)  # tower
    if mark:
        d.ellipse(_frac(box, 0.2, 0.0, 0.8, 0.6), fill=DARK)
        d.rectangle(_frac(box, 0.2, 0.3, 0.8, 0.75), fill=body)
    else:
        d.rectangle(_frac(box, 0.1, 0.0, 0.9, 0.3), fill=body)


_DRAW = {"aircraft": _aircraft, "car": _car, "reptile": _reptile, "bird": _bird, "food": _food,
         "dog": _dog, "mollusc": _mollusc, "mammal": _mammal, "flower": _flower, "landmark": _landmark}


def draw_entity(draw, box: tuple[int, int, int, int], category: Category, flip: bool) -> None:
    """Draws `category` filling the pixel box [x0, x1) x [y0, y1) (PIL's inclusive end is x1-1)."""
    x0, y0, x1, y1 = box
    _DRAW[category.domain](draw, (x0, y0, x1 - 1, y1 - 1), COLOURS[category.colour], category.mark, flip)
