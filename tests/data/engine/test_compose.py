"""Composition: every layout puts each entity exactly at its box (found back from the pixels of
solid-colour tiles), tiles keep their aspect and never overlap, the canvas meets the budget,
and distractors follow the confusion table."""
import random

import numpy as np
import pytest
from engine_layouts import picture

from dprl.config import CompositionConfig, LayoutWeightsConfig
from dprl.data.engine.compose import (LAYOUTS, canvas_size, draw_categories, plan_composite, read_confusion,
                                      render, tile)
from dprl.data.engine.sources import EntityImage, screen

# One colour per category, far apart in RGB, none near the white background or the grey frame.
COLOURS = [(230, 20, 20), (20, 180, 20), (20, 20, 230), (230, 160, 0), (150, 0, 200), (0, 170, 190)]
FRAME = (90, 90, 90)


def _pool(tmp_path) -> dict[str, list[EntityImage]]:
    """Six categories, two pictures each: a grey frame around an object of the category's colour,
    the object's box given (cropping must take exactly it), and one picture without a box whose
    central half is all object (the central crop must take exactly that)."""
    pool = {}
    for i, colour in enumerate(COLOURS):
        name = f"cat{i}"
        size = (40 + 9 * i, 30 + 5 * i)  # aspect ratios from 1.33 to 1.55
        box = (3 + i, 2, size[0] - 4, size[1] - 3 - i)
        boxed = picture(str(tmp_path / name / "boxed.png"), size, FRAME, box, colour)
        framed = picture(str(tmp_path / name / "whole.png"), (50, 100), FRAME, (12, 24, 38, 76), colour)
        pool[name] = [screen(EntityImage("bird", name, boxed, box, f"{name}/boxed.png"), 1.0),
                      screen(EntityImage("bird", name, framed, None, f"{name}/whole.png"), 0.52)]
    return pool


def _extent(px: np.ndarray, colour) -> tuple[tuple[int, int, int, int], int]:
    """(x1, y1, x2, y2) of the pixels within 3 levels of `colour` (exclusive ends), their count."""
    match = (np.abs(px - np.asarray(colour)).max(axis=2) <= 3)  # (H, W)
    ys, xs = np.nonzero(match)
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1), int(match.sum())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_entity_is_exactly_at_its_box(tmp_path, layout):
    pool = _pool(tmp_path)
    weights = LayoutWeightsConfig(**{name: float(name == layout) for name in LAYOUTS})
    cfg = CompositionConfig(min_entities=2, max_entities=6, layouts=weights, max_pixels=200 * 150,
                            size_multiple=28, min_scale=0.6)
    sizes = set()
    for seed in range(6):
        comp = plan_composite(random.Random(seed), f"s{seed}", "bird", pool, cfg, {})
        k = len(comp.placements)
        sizes.add(k)
        assert comp.layout == layout and comp.width % 28 == 0 and comp.height % 28 == 0
        assert comp.width * comp.height <= cfg.max_pixels
        assert len({p.entity.category for p in comp.placements}) == k  # distinct categories
        px = np.asarray(render(comp, (255, 255, 255)), dtype=np.int16)  # (H, W, 3)
        assert px.shape == (comp.height, comp.width, 3)
        boxes = [p.box for p in comp.placements]
        for p in comp.placements:
            x1, y1, x2, y2 = p.box
            extent, count = _extent(px, COLOURS[int(p.entity.category[3:])])
            assert extent == p.box and count == (x2 - x1) * (y2 - y1)  # the tile is the object, all of it
            rx1, ry1, rx2, ry2 = p.entity.region
            # aspect kept up to the rounding of each side to whole pixels: tile = region x s +- 0.5
            rw, rh = rx2 - rx1, ry2 - ry1
            assert abs((x2 - x1) * rh - (y2 - y1) * rw) <= 0.5 * (rw + rh)
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
        spans = sorted((b[0], b[2]) if layout == "row" else (b[1], b[3]) for b in boxes)
        if layout in ("row", "column"):  # side by side / stacked: no two share a column / a row
            assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    assert len(sizes) > 1  # 2-6 entities drawn


def test_canvas_size_meets_the_budget():
    for aspect in (0.25, 0.5, 1.0, 1.7, 4.0):
        w, h = canvas_size(aspect, 448 * 448, 28)
        assert w % 28 == 0 and h % 28 == 0 and w * h <= 448 * 448
        assert abs(w / h - aspect) / aspect < 0.15
        assert w * h > 0.8 * 448 * 448  # uses the budget, not a fraction of it


def test_confusable_distractors_first_with_probability_similarity(tmp_path):
    cats = [f"c{i}" for i in range(8)]
    conf_json = tmp_path / "conf.json"
    conf_json.write_text('{"c0": {"c5": 0.9, "c6": 0.5}, "c7": {"c0": 0.7}}')
    conf = read_confusion(str(conf_json))
    assert conf["c0"] == {"c5": 0.9, "c6": 0.5, "c7": 0.7} and conf["c5"] == {"c0": 0.9}  # symmetric
    conf_csv = tmp_path / "conf.csv"
    conf_csv.write_text("category_a,category_b,score\nc0,c5,0.9\nc0,c6,0.5\nc7,c0,0.7\n")
    assert read_confusion(str(conf_csv)) == conf

    targets_c0 = 0
    for seed in range(400):
        drawn = draw_categories(random.Random(seed), cats, 4, 1.0, conf)
        assert len(set(drawn)) == 4
        if drawn[0] == "c0":
            targets_c0 += 1
            assert drawn[1:] == ["c5", "c7", "c6"]  # by score, most confusable first
    assert targets_c0 > 20
    # similarity 0: the table is ignored, distractors are uniform
    first = [draw_categories(random.Random(s), cats, 2, 0.0, conf)[1] for s in range(400)
             if random.Random(s).choice(cats) == "c0"]
    assert len(set(first)) == 7 and first.count("c5") < len(first) / 3


def test_large_jpeg_tile_decoded_at_reduced_scale_matches_full_decode(tmp_path):
    """A tile much smaller than its JPEG is decoded in draft mode (1/2 .. 1/8 scale): same size,
    the same region, pixels close to a full decode's."""
    from PIL import Image

    yy, xx = np.mgrid[0:600, 0:800]  # (H, W)
    px = np.stack([xx * 255 // 800, yy * 255 // 600, (xx + yy) * 255 // 1400], axis=2).astype(np.uint8)
    px[200:400, 480:720] = (250, 20, 20)  # the object
    path = str(tmp_path / "big.jpg")
    Image.fromarray(px).save(path, quality=95)
    e = screen(EntityImage("car", "c", path, (480, 200, 720, 400), "big.jpg"), 1.0)
    out = tile(e, 60, 50)
    with Image.open(path) as im:
        full = im.convert("RGB").crop(e.region).resize((60, 50), Image.Resampling.LANCZOS)
    assert out.size == (60, 50)
    diff = np.abs(np.asarray(out, dtype=np.int16) - np.asarray(full, dtype=np.int16))
    assert diff[3:-3, 3:-3].max() <= 12 and diff.mean() < 3
    with Image.open(path) as im:  # draft mode really applied: the decoder would give 1/4 scale
        im.draft("RGB", (200, 150))
        assert im.size == (200, 150)
