"""Composition: entity pictures -> one picture holding 2-6 entities of distinct categories of a
domain, one of them the target the question names.

A composite is planned first (which categories, which pictures, which layout, where each tile
goes: all drawn from the sample's own RNG), then rendered. The canvas size is chosen before
anything is pasted: the pixel budget is met by sizing the canvas, not by resizing the result,
so each entity's box is the integer rectangle its tile was pasted into, exactly.

Layouts: grid (rows x columns of cells, some left empty), row, column (one line of cells) and
free (anywhere, no two tiles closer than the margin). Each tile is its entity's region of the
source picture resized to fit its room, aspect ratio kept.
"""
from __future__ import annotations

import csv
import json
import math
import random
from dataclasses import dataclass

from dprl.config import CompositionConfig
from dprl.data.engine.sources import EntityImage, image_input

LAYOUTS = ("grid", "row", "column", "free")
# A composite is at most this elongated: a row of six wide pictures on a 4:1 canvas still gives
# each entity a cell of useful size, where 12:1 would leave slivers.
MAX_CANVAS_ASPECT = 4.0
# Free placement: the tiles together cover about this fraction of the canvas before shrinking,
# which leaves room to place them without overlap in a few tries.
FREE_FILL = 0.45


@dataclass(frozen=True)
class Placement:
    entity: EntityImage
    box: tuple[int, int, int, int]  # its tile in the composite: x1 y1 x2 y2 pixels, x2/y2 exclusive


@dataclass(frozen=True)
class Composite:
    sample_id: str
    domain: str
    layout: str
    width: int
    height: int
    target: int  # index in `placements` of the entity the question names
    placements: tuple[Placement, ...]


# ---------------------------------------------------------------------------------------------
# Which categories
# ---------------------------------------------------------------------------------------------
def read_confusion(path: str) -> dict[str, dict[str, float]]:
    """{category: {other category: score}} from a confusion file, made symmetric (the larger of
    the two directions). JSON: {"a": {"b": 0.3, ...}, ...} or [{"a": .., "b": .., "score": ..}];
    CSV: rows `a,b,score`, an optional header first. Higher scores: more easily confused."""
    pairs: list[tuple[str, str, float]] = []
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        if isinstance(data, dict):
            pairs = [(a, b, float(s)) for a, row in data.items() for b, s in row.items()]
        else:
            pairs = [(r["a"], r["b"], float(r["score"])) for r in data]
    else:
        with open(path, encoding="utf-8", newline="") as fh:
            for i, row in enumerate(csv.reader(fh)):
                if not row:
                    continue
                if len(row) != 3:
                    raise ValueError(f"{path} line {i + 1}: expected a,b,score, got {row}")
                try:
                    pairs.append((row[0].strip(), row[1].strip(), float(row[2])))
                except ValueError:
                    if i > 0:  # only the first row may be a header
                        raise ValueError(f"{path} line {i + 1}: score {row[2]!r} is not a number") from None
    table: dict[str, dict[str, float]] = {}
    for a, b, s in pairs:
        if a == b:
            continue
        for x, y in ((a, b), (b, a)):
            row = table.setdefault(x, {})
            row[y] = max(s, row.get(y, s))
    return table


def draw_categories(rng: random.Random, categories: list[str], k: int, similarity: float,
                    confusion: dict[str, dict[str, float]]) -> list[str]:
    """[target, k - 1 distractors], distinct. Each distractor is, with probability `similarity`,
    the remaining category most confusable with the target (ties and unknown pairs: a random
    one), else any remaining category. Without a confusion table every draw is uniform."""
    target = rng.choice(categories)
    others = [c for c in categories if c != target]
    rng.shuffle(others)  # uniform draws take the first; ties go to the earliest
    scores = confusion.get(target, {})
    chosen = [target]
    for _ in range(k - 1):
        pick = others[0]
        if scores and rng.random() < similarity:
            pick = max(others, key=lambda c: scores.get(c, 0.0))
        others.remove(pick)
        chosen.append(pick)
    return chosen


# ---------------------------------------------------------------------------------------------
# Where the tiles go
# ---------------------------------------------------------------------------------------------
def canvas_size(aspect: float, max_pixels: int, multiple: int) -> tuple[int, int]:
    """(width, height), both multiples of `multiple`, width / height close to `aspect`, and
    width * height <= max_pixels."""
    height = math.sqrt(max_pixels / aspect)
    width = height * aspect
    return max(multiple, int(width // multiple) * multiple), max(multiple, int(height // multiple) * multiple)


def _mean_aspect(sizes: list[tuple[int, int]]) -> float:
    """Geometric mean of the tiles' width / height, kept within 1:3 .. 3:1."""
    mean = math.exp(sum(math.log(w / h) for w, h in sizes) / len(sizes))
    return min(3.0, max(1 / 3, mean))


def _grid_shape(layout: str, k: int) -> tuple[int, int]:
    """(rows, columns) of a cell layout holding k entities."""
    if layout == "row":
        return 1, k
    if layout == "column":
        return k, 1
    cols = math.ceil(math.sqrt(k))
    return math.ceil(k / cols), cols


def _fit(rng: random.Random, size: tuple[int, int], room_w: int, room_h: int,
         min_scale: float) -> tuple[int, int]:
    """A tile size for a region of `size`, aspect kept, filling a random [min_scale, 1] of the room."""
    w, h = size
    s = min(room_w / w, room_h / h) * rng.uniform(min_scale, 1.0)
    return min(room_w, max(1, round(w * s))), min(room_h, max(1, round(h * s)))


def place_cells(rng: random.Random, layout: str, sizes: list[tuple[int, int]], cfg: CompositionConfig):
    """(boxes, width, height) for a grid, row or column: one entity per cell (a grid's cells
    drawn at random, the rest left empty), each tile at a random spot of its cell's room."""
    rows, cols = _grid_shape(layout, len(sizes))
    aspect = min(MAX_CANVAS_ASPECT, max(1 / MAX_CANVAS_ASPECT, cols * _mean_aspect(sizes) / rows))
    width, height = canvas_size(aspect, cfg.max_pixels, cfg.size_multiple)
    cells = rng.sample(range(rows * cols), len(sizes)) if layout == "grid" else range(len(sizes))
    boxes = []
    for size, cell in zip(sizes, cells):
        r, c = divmod(cell, cols)
        x0, x1 = round(c * width / cols), round((c + 1) * width / cols)
        y0, y1 = round(r * height / rows), round((r + 1) * height / rows)
        m = round(cfg.margin * min(x1 - x0, y1 - y0))
        room_w, room_h = max(1, x1 - x0 - 2 * m), max(1, y1 - y0 - 2 * m)
        tw, th = _fit(rng, size, room_w, room_h, cfg.min_scale)
        bx, by = x0 + m + rng.randint(0, room_w - tw), y0 + m + rng.randint(0, room_h - th)
        boxes.append((bx, by, bx + tw, by + th))
    return boxes, width, height


def _apart(b: tuple[int, int, int, int], others: list, gap: int) -> bool:
    return all(b[2] + gap <= o[0] or o[2] + gap <= b[0] or b[3] + gap <= o[1] or o[3] + gap <= b[1]
               for o in others)


def place_free(rng: random.Random, sizes: list[tuple[int, int]], cfg: CompositionConfig):
    """(boxes, width, height) with tiles anywhere on the canvas, no two closer than the margin;
    sizes shrink round by round until all fit; None if they never do (not seen with 2-6 tiles
    and the default margin, but a wide margin can make it happen)."""
    rows, cols = _grid_shape("grid", len(sizes))
    aspect = min(MAX_CANVAS_ASPECT, max(1 / MAX_CANVAS_ASPECT, cols * _mean_aspect(sizes) / rows))
    width, height = canvas_size(aspect, cfg.max_pixels, cfg.size_multiple)
    share = width * height / len(sizes)
    gap = round(cfg.margin * math.sqrt(share))
    room_w, room_h = width - 2 * gap, height - 2 * gap
    for round_ in range(12):
        boxes = []
        for w, h in sizes:
            area = share * FREE_FILL * rng.uniform(cfg.min_scale, 1.0) * 0.85 ** round_
            s = min(math.sqrt(area / (w * h)), room_w / w, room_h / h)
            tw, th = min(room_w, max(1, round(w * s))), min(room_h, max(1, round(h * s)))
            for _ in range(40):
                x, y = rng.randint(gap, width - gap - tw), rng.randint(gap, height - gap - th)
                if _apart((x, y, x + tw, y + th), boxes, gap):
                    boxes.append((x, y, x + tw, y + th))
                    break
            else:
                break
        if len(boxes) == len(sizes):
            return boxes, width, height
    return None


def plan_composite(rng: random.Random, sample_id: str, domain: str,
                   pool: dict[str, list[EntityImage]], cfg: CompositionConfig,
                   confusion: dict[str, dict[str, float]]) -> Composite:
    """Draws a composite of `domain` from `pool` ({category: screened pictures}, at least
    cfg.min_entities categories)."""
    categories = sorted(pool)
    k = rng.randint(cfg.min_entities, min(cfg.max_entities, len(categories)))
    chosen = draw_categories(rng, categories, k, cfg.similarity, confusion)
    entities = [rng.choice(pool[c]) for c in chosen]  # entities[0] is the target
    order = list(range(k))
    rng.shuffle(order)  # where the target sits among the tiles is random too
    entities = [entities[i] for i in order]
    weights = [getattr(cfg.layouts, name) for name in LAYOUTS]
    layout = rng.choices(LAYOUTS, weights=weights)[0]
    sizes = [(e.region[2] - e.region[0], e.region[3] - e.region[1]) for e in entities]
    placed = place_free(rng, sizes, cfg) if layout == "free" else None
    if placed is None:
        layout = "grid" if layout == "free" else layout  # a grid when free placement found no room
        placed = place_cells(rng, layout, sizes, cfg)
    boxes, width, height = placed
    placements = tuple(Placement(e, b) for e, b in zip(entities, boxes))
    return Composite(sample_id, domain, layout, width, height, order.index(0), placements)


# ---------------------------------------------------------------------------------------------
# Pixels
# ---------------------------------------------------------------------------------------------
def tile(entity: EntityImage, width: int, height: int):
    """The entity's region of its picture resized to (width, height), RGB. A JPEG is decoded at
    the smallest scale that still has at least the tile's resolution (libjpeg's draft mode).
    The region is cropped before resizing, so no pixel from outside it bleeds into the tile."""
    from PIL import Image

    x0, y0, x1, y1 = entity.region
    with Image.open(image_input(entity.image)) as im:
        full_w, full_h = im.size
        im.draft("RGB", (max(1, math.ceil(full_w * width / (x1 - x0))),
                         max(1, math.ceil(full_h * height / (y1 - y0)))))
        sx, sy = im.size[0] / full_w, im.size[1] / full_h  # 1 unless drafted
        left, top = round(x0 * sx), round(y0 * sy)
        crop = im.crop((left, top, max(left + 1, round(x1 * sx)), max(top + 1, round(y1 * sy))))
    return crop.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)


def render(comp: Composite, background: tuple[int, int, int]):
    """The composite as a PIL RGB image: each tile pasted at its box on a plain background."""
    from PIL import Image

    canvas = Image.new("RGB", (comp.width, comp.height), tuple(background))
    for p in comp.placements:
        x1, y1, x2, y2 = p.box
        canvas.paste(tile(p.entity, x2 - x1, y2 - y1), (x1, y1))
    return canvas
