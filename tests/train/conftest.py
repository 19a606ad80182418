"""A small grounding data set in the world's schema, built by the tests themselves: pictures with
two or three coloured blocks, the question names one by colour, the reply is a short chain of
thought ending in that block's box (Qwen2-VL 0-1000 coordinates)."""
from __future__ import annotations

import json
import os
import random

import pytest

COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60)}


def _box_string(box) -> str:
    x1, y1, x2, y2 = (round(v * 1000 / 112) for v in box)
    return f"<|box_start|>({x1},{y1}),({x2},{y2})<|box_end|>"


def write_grounding_set(root: str, n: int, seed: int = 0) -> str:
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    rows = []
    for i in range(n):
        names = rng.sample(sorted(COLOURS), rng.choice([2, 3]))
        img = Image.new("RGB", (112, 112), (236, 236, 228))
        d = ImageDraw.Draw(img)
        boxes = []
        for j, name in enumerate(names):  # one block per column, so none overlap
            x0 = 4 + j * 36 + rng.randint(0, 6)
            y0 = rng.randint(4, 60)
            box = (x0, y0, x0 + 26, y0 + rng.randint(24, 44))
            d.rectangle(box, fill=COLOURS[name])
            boxes.append(box)
        t = rng.randrange(len(names))
        rel = os.path.join("images", f"s{i:03d}.png")
        img.save(os.path.join(root, rel))
        question = f"Please locate <|object_ref_start|>the {names[t]} block<|object_ref_end|> in the image."
        rows.append({
            "question_id": f"toy-{i:03d}", "question": question, "image": rel,
            "answer": _box_string(boxes[t]), "category": "block", "seen": True,
            "prompt": question + " Output the thinking process in <think> </think> and final answer "
                                 "(bounding box) in <answer> </answer> tags.",
            "response": f"<think>The {names[t]} one is number {t + 1}.</think><answer>{_box_string(boxes[t])}</answer>",
            "gt_boxes": [[round(v * 1000 / 112) for v in boxes[t]]],
        })
    path = os.path.join(root, "train.jsonl")
    with open(path, "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def write_knowledge(root: str) -> str:
    path = os.path.join(root, "knowledge.jsonl")
    with open(path, "w") as fh:
        for i, (name, rgb) in enumerate(sorted(COLOURS.items())):
            fh.write(json.dumps({"id": f"kb-{i}", "question": f"What colour is the {name} block?",
                                 "answer": f"It is {name}, RGB {rgb}."}) + "\n")
    return path


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> dict:
    root = str(tmp_path_factory.mktemp("toy-data"))
    return {"train": write_grounding_set(root, 24), "knowledge": write_knowledge(root), "root": root}


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> str:
    """The synthetic world at its smallest: one seen and one unseen domain, 8 training samples each."""
    from dprl.config import WorldConfig, load_config
    from dprl.data.world import generate_world

    out = str(tmp_path_factory.mktemp("small-world"))
    generate_world(load_config(WorldConfig, None, [
        f"output_dir={out}", "seen_domains=[aircraft]", "unseen_domains=[dog]", "train_per_domain=8",
        "val_per_domain=1", "test_per_domain=1", "fgvr_train_per_domain=1", "fgvr_test_per_domain=1",
        "workers=1"]), progress=False)
    return out
