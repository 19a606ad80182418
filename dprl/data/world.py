"""`dprl world`: writes the synthetic KVG world as files the `datasets` library loads.

Layout of `output_dir`:
    world.json                  config, domains (seen/unseen), categories, counts, chance levels
    knowledge_base.jsonl        one field-guide entry per category
    knowledge_corpus.jsonl      text-only question/answer pairs about every domain's categories
    kvg_{train,val,test}.jsonl  grounding samples (KVG-Bench schema plus SFT/GRPO fields)
    fgvr_{train,test}.jsonl     fine-grained recognition, multiple choice
    images/<file>/<id>.png

Every sample draws from its own RNG seeded by (seed, file, domain, index), so the output is the
same whatever the number of worker processes.
"""
from __future__ import annotations

import json
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from dprl.config import WorldConfig, save_config
from dprl.data.domains import Category, aspect, draw_entity, make_categories
from dprl.data.prompts import (R1_INSTRUCTION, R1_LETTER_INSTRUCTION, box_string, entity_ref,
                               grounding_question)

_ORDINALS = ("1st", "2nd", "3rd", "4th", "5th", "6th")
_LETTERS = "ABCDEF"
# Pale backgrounds: entities' colours stay the most saturated thing in the picture.
_BACKGROUNDS = ((238, 236, 226), (226, 234, 238), (236, 230, 238), (230, 238, 228))


def _entity_box(rng: random.Random, cfg: WorldConfig, domain: str) -> tuple[int, int]:
    """(width, height) in pixels: the longer side in [min, max] x image side, the domain's aspect."""
    side = rng.uniform(cfg.min_entity_size, cfg.max_entity_size) * cfg.image_size
    a = aspect(domain)
    w, h = (side, side / a) if a >= 1 else (side * a, side)
    return max(6, round(w)), max(6, round(h))


def _place(rng: random.Random, cfg: WorldConfig, sizes: list[tuple[int, int]]):
    """Non-overlapping pixel boxes (x0, y0, x1, y1) for `sizes`, or None if they do not fit."""
    boxes: list[tuple[int, int, int, int]] = []
    gap = 2  # keeps neighbours from touching, so every box is one entity's extent
    for w, h in sizes:
        for _ in range(60):
            x0 = rng.randint(1, cfg.image_size - w - 1)
            y0 = rng.randint(1, cfg.image_size - h - 1)
            b = (x0, y0, x0 + w, y0 + h)
            if all(b[2] + gap <= o[0] or o[2] + gap <= b[0] or b[3] + gap <= o[1] or o[3] + gap <= b[1]
                   for o in boxes):
                boxes.append(b)
                break
        else:
            return None
    return boxes


def cell_names(grid_size: int) -> list[str]:
    """Names of a grid's cells in reading order: "top left", "top right", ... ("centre" alone
    for the middle of a 3x3 grid)."""
    rows = {2: ("top", "bottom"), 3: ("top", "middle", "bottom")}[grid_size]
    cols = {2: ("left", "right"), 3: ("left", "centre", "right")}[grid_size]
    return ["centre" if (r, c) == ("middle", "centre") else f"{r} {c}" for r in rows for c in cols]


def _place_grid(rng: random.Random, cfg: WorldConfig, sizes: list[tuple[int, int]]):
    """(pixel boxes, cell indices): each entity in its own random cell, jittered inside it."""
    g = cfg.grid_size
    cells = rng.sample(range(g * g), len(sizes))
    boxes = []
    for (w, h), cell in zip(sizes, cells):
        r, c = divmod(cell, g)
        cx0, cx1 = round(c * cfg.image_size / g), round((c + 1) * cfg.image_size / g)
        cy0, cy1 = round(r * cfg.image_size / g), round((r + 1) * cfg.image_size / g)
        room_x, room_y = max(0, cx1 - cx0 - w - 2), max(0, cy1 - cy0 - h - 2)  # 1 px margin each side
        x0 = cx0 + 1 + round(room_x / 2 + rng.uniform(-0.5, 0.5) * cfg.cell_jitter * room_x)
        y0 = cy0 + 1 + round(room_y / 2 + rng.uniform(-0.5, 0.5) * cfg.cell_jitter * room_y)
        boxes.append((x0, y0, x0 + w, y0 + h))
    return boxes, cells


def _to_answer_coords(box_px, cfg: WorldConfig) -> list[float]:
    """Pixel box -> the configured answer convention (Qwen2-VL's 0-1000 by default)."""
    if cfg.box_format == "pixels":
        return [float(v) for v in box_px]
    s = 1000.0 / cfg.image_size
    return [float(round(v * s)) for v in box_px]


def _norm1000(box_px, size: int) -> list[float]:
    return [float(round(v * 1000.0 / size)) for v in box_px]


def _draw(cfg: WorldConfig, rng: random.Random, cats: list[Category], boxes, path: str) -> None:
    from PIL import Image, ImageDraw

    background = rng.choice(_BACKGROUNDS)
    if cfg.position_tint > 0:
        img = _tinted_background(cfg.image_size, background, cfg.position_tint)
    else:
        img = Image.new("RGB", (cfg.image_size, cfg.image_size), background)
    d = ImageDraw.Draw(img)
    for cat, box in zip(cats, boxes):
        draw_entity(d, box, cat, flip=rng.random() < 0.5)
    img.save(path, optimize=False, compress_level=1)


def _tinted_background(size: int, base: tuple[int, int, int], strength: float):
    """A background whose red falls from left to right and blue from top to bottom, by up to
    96*strength levels: every background patch shows where it is, entities keep their colours."""
    from PIL import Image

    ramp = (np.arange(size, dtype=np.float32) + 0.5) / size  # (S,) in (0, 1)
    px = np.empty((size, size, 3), dtype=np.float32)  # (H, W, 3)
    px[:] = np.asarray(base, dtype=np.float32)
    px[:, :, 0] -= 96.0 * strength * ramp[None, :]
    px[:, :, 2] -= 96.0 * strength * ramp[:, None]
    return Image.fromarray(np.clip(np.rint(px), 0, 255).astype(np.uint8))


def _distractors(rng: random.Random, cfg: WorldConfig, target: Category, pool: list[Category], k: int):
    """k distinct other categories; a look-alike (same colour, other mark) first with
    probability `distractor_similarity`."""
    others = [c for c in pool if c != target]
    rng.shuffle(others)
    lookalikes = [c for c in others if c.colour == target.colour]
    chosen = []
    if lookalikes and k > 0 and rng.random() < cfg.distractor_similarity:
        chosen.append(lookalikes[0])
    chosen += [c for c in others if c not in chosen][: k - len(chosen)]
    return chosen


def plan_sentence(category: Category) -> str:
    """The first sentence of a chain of thought: the named entity's look, recalled from knowledge.
    The knowledge corpus says it in the same words ("Find the kalo: red, dark marks."), so
    recalling the look of an entity known only from text is the same step as for a grounded one."""
    return f"Find the {category.name}: {category.colour}, {category.mark_short}."


def chain_of_thought(target: Category, cats: list[Category], boxes_px, answer_box,
                     cells: list[int] | None = None, grid_size: int = 0) -> str:
    """Plan (the named entity's known look) -> what each candidate looks like -> which one
    matches -> the box. A few dozen tokens: the tiny model writes it at ~100 tok/s.

    On a grid (`cells`: each candidate's cell index, row-major) the thought visits the cells in
    reading order, says what each holds and whether that is the look of the plan, and stops at
    the match: "top left: purple dark marks, no. top right: none. bottom left: orange plain,
    yes." Each step is local (the look of the cell being named; equal to the plan's or
    not), and the box follows the cell it belongs to. A thought that lists the looks and then
    names the match's cell ("The orange plain is at the bottom left") instead makes the
    model find a look among earlier tokens and copy the label before it. With the scan, the tiny
    model after 3000 steps puts 71% of seen val targets in the right cell (2-4 entities; 84% of
    the cells' looks right); in the main job, the thought that listed looks sorted by colour
    had reached 17% Acc@0.5 after 500 SFT steps (not measured longer). Off the grid,
    candidates go left to right and the match is named by its rank."""
    plan = f"<think>{plan_sentence(target)} "
    t = cats.index(target)
    if cells is not None:
        held = {cell: cat for cat, cell in zip(cats, cells)}
        steps = []
        for cell, name in enumerate(cell_names(grid_size)):
            if cell not in held:
                steps.append(f"{name}: none.")
                continue
            steps.append(f"{name}: {held[cell].short}, {'yes' if cell == cells[t] else 'no'}.")
            if cell == cells[t]:
                break
        thought = " ".join(steps)
    else:
        order = sorted(range(len(cats)), key=lambda i: (boxes_px[i][0] + boxes_px[i][2], boxes_px[i][1]))
        seen = "Left to right: " + "; ".join(cats[i].short for i in order)
        thought = f"{seen}. The {_ORDINALS[order.index(t)]} is {target.short}."
    return f"{plan}{thought}</think><answer>{box_string(answer_box)}</answer>"


def grounding_sample(cfg: WorldConfig, split: str, domain: str, index: int, seen: bool,
                     categories: list[Category], image_dir: str) -> dict:
    rng = random.Random(f"{cfg.seed}-kvg-{split}-{domain}-{index}")
    while True:
        k = rng.randint(cfg.min_entities, cfg.max_entities)
        target = rng.choice(categories)
        cats = [target] + _distractors(rng, cfg, target, categories, k - 1)
        rng.shuffle(cats)
        sizes = [_entity_box(rng, cfg, domain) for _ in cats]
        if cfg.layout == "grid":
            boxes_px, cells = _place_grid(rng, cfg, sizes)
            break
        boxes_px, cells = _place(rng, cfg, sizes), None
        if boxes_px is not None:
            break
    qid = f"kvg-{split}-{domain}-{index:05d}"
    rel = os.path.join("images", f"kvg_{split}", f"{qid}.png")
    _draw(cfg, rng, cats, boxes_px, os.path.join(image_dir, f"{qid}.png"))
    t = cats.index(target)
    answer_box = _to_answer_coords(boxes_px[t], cfg)
    question = grounding_question(target.name)
    return {
        # KVG-Bench's schema
        "question_id": qid,
        "question": question,
        "image": rel,
        "answer": box_string(answer_box),
        "category": domain,
        # what SFT / GRPO / the baselines need
        "domain": domain,
        "entity": target.name,
        "seen": seen,
        "split": split,
        "prompt": question + R1_INSTRUCTION,
        "response": chain_of_thought(target, cats, boxes_px, answer_box, cells, cfg.grid_size),
        "gt_boxes": [_norm1000(boxes_px[t], cfg.image_size)],
        "gt_boxes_px": [list(map(float, boxes_px[t]))],
        "image_width": cfg.image_size,
        "image_height": cfg.image_size,
        "candidate_entities": [c.name for c in cats],
        "candidate_boxes": [_norm1000(b, cfg.image_size) for b in boxes_px],
    }


def fgvr_sample(cfg: WorldConfig, split: str, domain: str, index: int, seen: bool,
                categories: list[Category], image_dir: str) -> dict:
    rng = random.Random(f"{cfg.seed}-fgvr-{split}-{domain}-{index}")
    target = rng.choice(categories)
    choices = [target] + _distractors(rng, cfg, target, categories, cfg.fgvr_choices - 1)
    rng.shuffle(choices)
    w, h = _entity_box(rng, cfg, domain)
    scale = 0.7 * cfg.image_size / max(w, h)  # one entity, large
    w, h = round(w * scale), round(h * scale)
    x0, y0 = (cfg.image_size - w) // 2, (cfg.image_size - h) // 2
    qid = f"fgvr-{split}-{domain}-{index:05d}"
    rel = os.path.join("images", f"fgvr_{split}", f"{qid}.png")
    _draw(cfg, rng, [target], [(x0, y0, x0 + w, y0 + h)], os.path.join(image_dir, f"{qid}.png"))
    letter = _LETTERS[choices.index(target)]
    options = " ".join(f"{_LETTERS[i]}. {c.name}" for i, c in enumerate(choices))
    question = f"Which {domain} is this? Options: {options}. Answer with the option's letter."
    return {
        "question_id": qid,
        "question": question,
        "image": rel,
        "answer": letter,
        "category": domain,
        "domain": domain,
        "entity": target.name,
        "seen": seen,
        "split": split,
        "choices": [c.name for c in choices],
        "prompt": question + R1_LETTER_INSTRUCTION,
        "response": (f"<think>It is {target.short}: the {target.name}.</think>"
                     f"<answer>{letter}</answer>"),
        "image_width": cfg.image_size,
        "image_height": cfg.image_size,
    }


def knowledge(categories: dict[str, list[Category]], seen_domains,
              recall: bool = True) -> tuple[list[dict], list[dict]]:
    """(knowledge base: one entry per category, corpus: question/answer pairs per category).

    With `recall`, each category also has a recall row: the grounding question, answered with
    only the first sentence of its chain of thought ("<think>Find the kalo: red, dark marks.",
    `partial`: no end of turn follows). It is the one step of a thought that is knowledge, not
    perception; no picture of the entity and no box come with it. Without it the tiny model
    recalls an unseen entity's look when asked in the corpus's words (100% of colours) but not
    after the grounding question (30%): what it learned from text stays with the text's wording."""
    base, corpus = [], []
    for domain, cats in categories.items():
        seen = domain in seen_domains
        for c in cats:
            base.append({"entity": c.name, "domain": domain, "seen": seen, "colour": c.colour,
                         "mark": c.mark_long, "description": c.description(),
                         # what the knowledge probe checks an answer for (dprl.eval.knowledge_probe)
                         "attributes": {"colour": c.colour, "mark": c.mark_long}})
            look_alike = [o.name for o in cats if o.colour == c.colour and o != c]
            qa = [
                (f"What does the {c.name} look like?", c.description()),
                (f"What colour is the {c.name}?", f"The {c.name} is {c.colour}."),
                (f"What marks the {c.name}?", f"The {c.name} has {c.mark_long}."),
                (f"What kind of thing is the {c.name}?", f"The {c.name} is a {domain}."),
                (f"Which {domain} is {c.short}?", f"The {c.name}."),
                # the plan's own words, the entity named as a grounding question names it
                (f"How do you find {entity_ref(c.name)}?", plan_sentence(c)),
            ]
            if look_alike:
                qa.append((f"How do you tell the {c.name} from the {look_alike[0]}?",
                           f"Both are {c.colour}; the {c.name} has {c.mark_long}."))
            rows = [{"question": q, "answer": a} for q, a in qa]
            if recall:
                rows.append({"question": grounding_question(c.name) + R1_INSTRUCTION,
                             "answer": f"<think>{plan_sentence(c)}", "partial": True})
            for j, row in enumerate(rows):
                corpus.append({"id": f"kb-{c.name}-{j}", "domain": domain, "entity": c.name,
                               "seen": seen} | row)
    return base, corpus


def _jobs(cfg: WorldConfig) -> list[tuple[str, str, str, int]]:
    """(kind, split, domain, count) for every file part."""
    jobs = []
    for d in cfg.seen_domains:
        jobs += [("kvg", "train", d, cfg.train_per_domain), ("kvg", "val", d, cfg.val_per_domain),
                 ("fgvr", "train", d, cfg.fgvr_train_per_domain)]
    for d in cfg.seen_domains + cfg.unseen_domains:
        jobs += [("kvg", "test", d, cfg.test_per_domain), ("fgvr", "test", d, cfg.fgvr_test_per_domain)]
    return [j for j in jobs if j[3] > 0]


def _run_chunk(args) -> list[dict]:
    cfg, kind, split, domain, start, stop, root = args
    # Names are drawn over all domains in order (no two alike), so rebuild the whole table.
    categories = make_categories(cfg.seen_domains + cfg.unseen_domains, cfg.categories_per_domain,
                                 cfg.seed)[domain]
    make = grounding_sample if kind == "kvg" else fgvr_sample
    image_dir = os.path.join(root, "images", f"{kind}_{split}")
    seen = domain in cfg.seen_domains
    return [make(cfg, split, domain, i, seen, categories, image_dir) for i in range(start, stop)]


def chance_levels(records: list[dict]) -> dict[str, float]:
    """Acc@0.5 of two baselines that use no model: a random entity (expected value) and the
    largest entity, from the candidate boxes in the data."""
    from dprl.rewards import best_iou

    if not records:
        return {"random_entity": float("nan"), "largest_entity": float("nan"), "samples": 0}
    random_hits, largest = [], []
    for r in records:
        cand = np.asarray(r["candidate_boxes"], dtype=np.float32)  # (K, 4)
        iou = best_iou(cand, [r["gt_boxes"]] * len(cand))  # (K,)
        random_hits.append(float((iou >= 0.5).mean()))
        area = (cand[:, 2] - cand[:, 0]) * (cand[:, 3] - cand[:, 1])  # (K,)
        largest.append(float(iou[int(area.argmax())] >= 0.5))
    return {"random_entity": float(np.mean(random_hits)), "largest_entity": float(np.mean(largest)),
            "samples": len(records)}


def _write_jsonl(path: str, rows: list[dict]) -> None:
    with open(path, "w") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def generate_world(cfg: WorldConfig, progress: bool = True) -> dict:
    """Writes the world to `cfg.output_dir`; returns the summary also saved as world.json."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    root = cfg.output_dir
    os.makedirs(root, exist_ok=True)
    save_config(cfg, root, "world_config.yaml")
    categories = make_categories(cfg.seen_domains + cfg.unseen_domains, cfg.categories_per_domain, cfg.seed)
    jobs = _jobs(cfg)
    for kind, split, _, _ in jobs:
        os.makedirs(os.path.join(root, "images", f"{kind}_{split}"), exist_ok=True)
    chunk = 200  # samples per task: big enough to amortise the task overhead
    tasks = [(cfg, kind, split, d, s, min(s + chunk, n), root)
             for kind, split, d, n in jobs for s in range(0, n, chunk)]
    workers = cfg.workers or (os.cpu_count() or 1)
    total = sum(t[5] - t[4] for t in tasks)
    files: dict[str, list[dict]] = {}
    bar = tqdm(total=total, desc="world", unit="sample", disable=not progress)
    if workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = pool.map(_run_chunk, tasks)
            for t, rows in zip(tasks, results):
                files.setdefault(f"{t[1]}_{t[2]}", []).extend(rows)
                bar.update(len(rows))
    else:
        for t in tasks:
            rows = _run_chunk(t)
            files.setdefault(f"{t[1]}_{t[2]}", []).extend(rows)
            bar.update(len(rows))
    bar.close()
    for name, rows in files.items():
        _write_jsonl(os.path.join(root, f"{name}.jsonl"), rows)
    base, corpus = knowledge(categories, cfg.seen_domains, cfg.corpus_recall)
    _write_jsonl(os.path.join(root, "knowledge_base.jsonl"), base)
    _write_jsonl(os.path.join(root, "knowledge_corpus.jsonl"), corpus)

    chance = {}
    for split in ("train", "val", "test"):
        rows = files.get(f"kvg_{split}", [])
        chance[split] = chance_levels(rows)
        if split == "test":
            chance["test_seen"] = chance_levels([r for r in rows if r["seen"]])
            chance["test_unseen"] = chance_levels([r for r in rows if not r["seen"]])
    seconds = time.perf_counter() - t0
    summary = {
        "seed": cfg.seed,
        "image_size": cfg.image_size,
        "box_format": cfg.box_format,
        "seen_domains": cfg.seen_domains,
        "unseen_domains": cfg.unseen_domains,
        "categories": {d: [c.name for c in cs] for d, cs in categories.items()},
        "counts": {name: len(rows) for name, rows in sorted(files.items())}
        | {"knowledge_base": len(base), "knowledge_corpus": len(corpus)},
        "chance_acc@0.5": chance,
        "seconds": round(seconds, 2),
        "samples_per_minute": round(total / max(seconds, 1e-9) * 60),
    }
    with open(os.path.join(root, "world.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    return summary


def print_summary(summary: dict, root: str) -> None:
    print(f"wrote {sum(v for k, v in summary['counts'].items() if k.startswith(('kvg', 'fgvr')))} "
          f"samples to {root} in {summary['seconds']:.1f}s ({summary['samples_per_minute']} samples/min)")
    for name, n in summary["counts"].items():
        print(f"  {name:<18} {n:>6}")
    print("chance Acc@0.5 (no model):")
    print(f"  {'split':<12} {'random entity':>14} {'largest entity':>15}")
    for split, c in summary["chance_acc@0.5"].items():
        if c["samples"]:
            print(f"  {split:<12} {100 * c['random_entity']:>13.1f}% {100 * c['largest_entity']:>14.1f}%")
