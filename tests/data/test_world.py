"""The synthetic world: deterministic, in KVG-Bench's schema, and its boxes are where it drew."""
import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image

from dprl.config import ConfigError, WorldConfig, load_config
from dprl.data.domains import ALL_DOMAINS, SEEN_DOMAINS, make_categories
from dprl.data.kvg import load_samples
from dprl.data.prompts import answer_boxes
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


def test_boxes_cover_the_drawn_entity_and_cot_ends_with_the_answer(small_world):
    for r in _rows(small_world, "kvg_val.jsonl"):
        img = np.asarray(Image.open(os.path.join(small_world, r["image"])).convert("RGB")).astype(int)
        bg = img[0, 0]
        x0, y0, x1, y1 = (int(v) for v in r["gt_boxes_px"][0])
        inside = np.abs(img[y0:y1, x0:x1] - bg).sum(-1) > 0  # (h, w) entity pixels
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
])
def test_bad_world_config_names_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(WorldConfig, None, [override])
