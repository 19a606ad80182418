"""The synthetic world: deterministic, in KVG-Bench's schema, and its boxes are where it drew."""
import hashlib
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from dprl.config import ConfigError, WorldConfig, load_config
from dprl.data.domains import ALL_DOMAINS, SEEN_DOMAINS, make_categories
from dprl.data.kvg import load_samples
from dprl.data.prompts import R1_INSTRUCTION, answer_boxes, grounding_question
from dprl.data.world import generate_world


def _digest(root: str) -> dict:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith((".jsonl", ".png")):
                p = os.path.join(dirpath, f)
                out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def _rows(root, name):
    return [json.loads(line) for line in open(os.path.join(root, name))]


def test_same_seed_same_bytes_whatever_the_workers(tmp_path, small_world):
    cfg = WorldConfig(output_dir=str(tmp_path / "w"), train_per_domain=6, val_per_domain=2,
                      test_per_domain=3, fgvr_train_per_domain=2, fgvr_test_per_domain=2, workers=2)
    generate_world(cfg, progress=False)
    a, b = _digest(small_world), _digest(str(tmp_path / "w"))
    assert len(a) > 100 and a == b
    cfg.seed, cfg.output_dir = 1, str(tmp_path / "w1")
    generate_world(cfg, progress=False)
    c = _digest(str(tmp_path / "w1"))
    assert a.keys() == c.keys() and sum(a[k] != c[k] for k in a) > len(a) // 2


def test_splits_and_counts(small_world):
    summary = json.load(open(os.path.join(small_world, "world.json")))
    assert summary["counts"]["kvg_train"] == 6 * 5 and summary["counts"]["kvg_test"] == 3 * 10
    train = _rows(small_world, "kvg_train.jsonl")
    test = _rows(small_world, "kvg_test.jsonl")
    assert {r["domain"] for r in train} == set(SEEN_DOMAINS)  # unseen domains never trained on
    assert {r["domain"] for r in test} == set(ALL_DOMAINS)
    assert all(r["seen"] == (r["domain"] in SEEN_DOMAINS) for r in test)
    corpus = _rows(small_world, "knowledge_corpus.jsonl")
    assert {r["domain"] for r in corpus} == set(ALL_DOMAINS)  # knowledge covers unseen domains
    names = {c.name for cs in make_categories(list(ALL_DOMAINS), 8, 0).values() for c in cs}
    assert len(names) == 80  # distinct made-up names
    c = summary["chance_acc@0.5"]["test"]
    assert 0.2 < c["random_entity"] < 0.55 and 0.0 <= c["largest_entity"] <= 1.0


def _background_of(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) the default world's tinted background that `img` was drawn on: of the pale
    bases, the one whose tinted picture most pixels of `img` equal."""
    from dprl.data.world import _BACKGROUNDS, _tinted_background

    strength = WorldConfig().position_tint
    options = [np.asarray(_tinted_background(img.shape[0], b, strength)).astype(int) for b in _BACKGROUNDS]
    return max(options, key=lambda bg: (bg == img).all(-1).mean())


def test_boxes_cover_the_drawn_entity_and_cot_ends_with_the_answer(small_world):
    for r in _rows(small_world, "kvg_val.jsonl"):
        img = np.asarray(Image.open(os.path.join(small_world, r["image"])).convert("RGB")).astype(int)
        bg = _background_of(img)
        assert (bg == img).all(-1).mean() > 0.5  # the background is known exactly
        x0, y0, x1, y1 = (int(v) for v in r["gt_boxes_px"][0])
        inside = np.abs(img[y0:y1, x0:x1] - bg[y0:y1, x0:x1]).sum(-1) > 0  # (h, w) entity pixels
        assert inside.mean() > 0.3
        # every box edge touches the entity: the box is tight
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        # gt in 0-1000 is the pixel box scaled, and is what the answer and the CoT's answer say
        assert np.allclose(r["gt_boxes"][0], np.round(np.array(r["gt_boxes_px"][0]) * 1000 / 112))
        assert answer_boxes(r["answer"]) == r["gt_boxes"]
        assert r["response"].startswith("<think>") and r["response"].endswith(f"<answer>{r['answer']}</answer>")
        assert r["entity"] in r["question"] and r["entity"] in r["candidate_entities"]
        assert len(set(r["candidate_entities"])) == len(r["candidate_entities"]) >= 2


def test_loads_with_datasets_in_the_kvg_bench_schema(small_world):
    from datasets import load_dataset

    files = {s: os.path.join(small_world, f"kvg_{s}.jsonl") for s in ("train", "val", "test")}
    ds = load_dataset("json", data_files=files)
    for field in ("question_id", "question", "image", "answer", "category"):
        assert field in ds["test"].column_names
    assert ds["test"][0]["answer"].startswith("<|box_start|>(")
    samples, bad = load_samples(files["test"], "kvg")
    assert len(samples) == 30 and not bad
    fgvr, bad = load_samples(os.path.join(small_world, "fgvr_test.jsonl"), "fgvr")
    assert not bad and all(s.answer in "ABCD" for s in fgvr)
    assert all(s.record["choices"]["ABCD".index(s.answer)] == s.record["entity"] for s in fgvr)


def test_parquet_with_embedded_images_loads_like_the_real_benchmark(small_world, tmp_path):
    """KVG-Bench-style parquet: image bytes inside the file, several GT boxes in one answer."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _rows(small_world, "kvg_test.jsonl")[:3]
    table = pa.table({
        "question_id": [r["question_id"] for r in rows],
        "question": [r["question"] for r in rows],
        "image": [{"bytes": open(os.path.join(small_world, r["image"]), "rb").read(), "path": None} for r in rows],
        "answer": [r["answer"] + " <|box_start|>(0,0),(10,10)<|box_end|>" for r in rows],
        "category": [r["category"] for r in rows],
    })
    path = str(tmp_path / "bench.parquet")
    pq.write_table(table, path)
    samples, bad = load_samples(path, "kvg", seen_domains=SEEN_DOMAINS)
    assert not bad and len(samples) == 3 and len(samples[0].gt_boxes) == 2
    assert samples[0].seen == (samples[0].domain in SEEN_DOMAINS)


@pytest.mark.parametrize("override, key", [
    ("seen_domains=[aircraft, dragon]", "seen_domains"),
    ("unseen_domains=[aircraft]", "unseen_domains"),
    ("max_entities=7", "max_entities"),
    ("min_entity_size=0.01", "min_entity_size"),
    ("distractor_similarity=1.5", "distractor_similarity"),
    ("box_format=pixel", "box_format"),
    ("layout=tiles", "layout"),
    ("position_tint=2", "position_tint"),
    # a 3x3 grid has no room for entities of 0.38 of the picture
    ("[layout=grid, grid_size=3]", "max_entity_size"),
    ("[layout=grid, grid_size=4]", "grid_size"),
    ("[layout=grid, max_entities=5]", "max_entities"),
])
def test_bad_world_config_names_the_key(override, key):
    overrides = override[1:-1].split(", ") if override.startswith("[") else [override]
    with pytest.raises(ConfigError, match=key):
        load_config(WorldConfig, None, overrides)


@pytest.mark.parametrize("grid_size, max_size", [(2, 0.38), (3, 0.28)])
def test_grid_layout_puts_each_entity_in_its_named_cell(tmp_path, grid_size, max_size):
    from dprl.data.world import cell_names

    cfg = WorldConfig(output_dir=str(tmp_path), layout="grid", grid_size=grid_size,
                      max_entity_size=max_size, min_entity_size=0.2, position_tint=0.5,
                      max_entities=4, train_per_domain=0, val_per_domain=8, test_per_domain=0,
                      fgvr_train_per_domain=0, fgvr_test_per_domain=0, workers=1)
    generate_world(cfg, progress=False)
    names = cell_names(grid_size)
    looks = {c.name: c.short for cs in make_categories(cfg.seen_domains, 8, cfg.seed).values() for c in cs}
    cell = 112 / grid_size
    for r in _rows(str(tmp_path), "kvg_val.jsonl"):
        cells = []
        for x0, y0, x1, y1 in (np.array(b) * 112 / 1000 for b in r["candidate_boxes"]):
            col, row = int((x0 + x1) / 2 // cell), int((y0 + y1) / 2 // cell)
            # inside its cell, with the 1-pixel margin (boxes are rounded to 0-1000)
            assert col * cell - 1 <= x0 and x1 <= (col + 1) * cell + 1
            assert row * cell - 1 <= y0 and y1 <= (row + 1) * cell + 1
            cells.append(row * grid_size + col)
        assert len(set(cells)) == len(cells)  # one entity per cell
        target = cells[r["candidate_entities"].index(r["entity"])]
        # The thought visits the cells in reading order and stops at the target's: each visited
        # cell says "none" or its occupant's look, and "yes" only for the target.
        thought = r["response"].split("</think>")[0].split(". ", 1)[1]
        visited = re.findall(r"([a-z ]+?): ([a-z ]+?)(?:, (yes|no))?\.(?: |$)", thought)
        assert [name for name, _, _ in visited] == names[:target + 1]
        assert " ".join(f"{n}: {look}{', ' + d if d else ''}." for n, look, d in visited) == thought
        for k, (_, look, decision) in enumerate(visited):
            if k not in cells:
                assert (look, decision) == ("none", "")
                continue
            assert look == looks[r["candidate_entities"][cells.index(k)]]
            assert decision == ("yes" if k == target else "no")
        assert answer_boxes(r["answer"]) == r["gt_boxes"]


def test_position_tint_colours_only_the_background(tmp_path):
    base = dict(train_per_domain=0, val_per_domain=3, test_per_domain=0, fgvr_train_per_domain=0,
                fgvr_test_per_domain=0, workers=1, seen_domains=["car"], unseen_domains=[])
    plain, tinted = tmp_path / "plain", tmp_path / "tinted"
    generate_world(WorldConfig(output_dir=str(plain), position_tint=0.0, **base), progress=False)
    generate_world(WorldConfig(output_dir=str(tinted), position_tint=1.0, **base), progress=False)
    for r in _rows(str(plain), "kvg_val.jsonl"):
        a = np.asarray(Image.open(plain / r["image"]).convert("RGB")).astype(int)  # (H, W, 3)
        b = np.asarray(Image.open(tinted / r["image"]).convert("RGB")).astype(int)
        background = np.abs(a - a[0, 0]).sum(-1) == 0  # (H, W)
        assert (a[~background] == b[~background]).all()  # entities keep their colours exactly
        assert (np.abs(a - b).sum(-1) > 0)[background].mean() > 0.9  # the background is tinted...
        assert b[5, 100, 0] < b[5, 5, 0] - 60 and b[100, 5, 2] < b[5, 5, 2] - 60


def test_looks_use_words_every_domain_shares_and_the_corpus_says_each_plan(small_world):
    from dprl.data.domains import ALL_DOMAINS, MARK_LOOKS
    from dprl.data.world import plan_sentence

    categories = make_categories(list(ALL_DOMAINS), 8, 0)
    for domain, cats in categories.items():
        marks = {c.mark_short for c in cats}
        assert marks <= set(MARK_LOOKS) and "plain" in marks and len(marks) == 2, domain
        assert len({c.mark_long for c in cats}) == 2  # the field guide keeps the domain's own words
    corpus = _rows(small_world, "knowledge_corpus.jsonl")
    answers: dict[str, set] = {}
    for row in corpus:
        answers.setdefault(row["entity"], set()).add(row["answer"])
    base = _rows(small_world, "knowledge_base.jsonl")
    assert {r["entity"] for r in base} == set(answers) and any(not r["seen"] for r in base)
    by_name = {c.name: c for cs in make_categories(list(ALL_DOMAINS), 8, 0).values() for c in cs}
    for r in base:  # every entity, unseen ones too, has its plan in the chain of thought's words
        c = by_name[r["entity"]]
        assert plan_sentence(c) in answers[c.name]
        assert r["attributes"] == {"colour": c.colour, "mark": c.mark_long}
    for r in _rows(small_world, "kvg_val.jsonl"):
        assert r["response"].startswith(f"<think>{plan_sentence(by_name[r['entity']])} ")
    # One recall row per entity: the grounding question, then only the thought's first sentence
    # (knowledge); no picture, no box, no end of turn.
    recall = [r for r in corpus if r.get("partial")]
    assert sorted(r["entity"] for r in recall) == sorted(by_name)
    for r in recall:
        assert r["question"] == grounding_question(r["entity"]) + R1_INSTRUCTION
        assert r["answer"] == f"<think>{plan_sentence(by_name[r['entity']])}"
        assert not {"image", "answer_box", "gt_boxes"} & set(k for k, v in r.items() if v is not None)
