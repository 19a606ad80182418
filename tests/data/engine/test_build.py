"""Sources -> composition -> output for a config: the world as an image folder in, KVG samples
out; byte-identical for a seed whatever the workers; bad input skipped, counted, nothing else lost."""
import hashlib
import json
import os

import numpy as np
import pytest
from engine_layouts import corrupt, cub, image_folder
from PIL import Image

from dprl.config import CompositionConfig, ConfigError, EngineDataConfig, EngineSourceConfig
from dprl.data.engine import build
from dprl.data.engine.build import build_samples
from dprl.data.engine.world_folder import world_image_folders, world_sources
from dprl.data.kvg import load_samples


def _digest(root: str) -> dict:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def _config(out, sources, **composition) -> EngineDataConfig:
    comp = CompositionConfig(**({"samples_per_domain": 10, "max_pixels": 168 * 168, "image_format": "png"}
                                | composition))
    return EngineDataConfig(output_dir=str(out), sources=sources, composition=comp, workers=1)


def test_world_folders_hold_each_entity_exactly(small_world, tmp_path):
    trees = world_image_folders(small_world, str(tmp_path / "crops"), "train", "grounding", domains=("bird",))
    assert list(trees) == ["bird"]
    row = json.loads(next(line for line in open(os.path.join(small_world, "kvg_train.jsonl")) if '"bird"' in line))
    target = row["candidate_entities"].index(row["entity"])
    crop = Image.open(os.path.join(trees["bird"], row["entity"], f"{row['question_id']}-{target}.png"))
    x1, y1, x2, y2 = row["gt_boxes_px"][0]
    assert crop.size == (x2 - x1, y2 - y1)  # the 0-1000 candidate box maps back to the exact pixels
    with Image.open(os.path.join(small_world, row["image"])) as im:
        assert np.array_equal(np.asarray(crop), np.asarray(im.convert("RGB").crop((x1, y1, x2, y2))))
    whole = world_image_folders(small_world, str(tmp_path / "whole"), "train", "fgvr")
    fgvr = [json.loads(line) for line in open(os.path.join(small_world, "fgvr_train.jsonl"))]
    assert sorted(whole) == sorted({r["domain"] for r in fgvr})
    assert sum(len(fs) for _, _, fs in os.walk(tmp_path / "whole")) == len(fgvr)


def test_world_in_kvg_samples_out_same_bytes_whatever_the_workers(small_world, tmp_path, monkeypatch):
    trees = world_image_folders(small_world, str(tmp_path / "crops"), "train", "grounding",
                                domains=("aircraft", "bird"))
    sources = world_sources(trees)
    result = build_samples(_config(tmp_path / "a", sources), progress=False)
    assert result["counts"]["samples_per_domain"] == {"aircraft": 10, "bird": 10} and result["skipped"] == {}
    assert set(result["metrics"]) >= {"time/sources_s", "time/compose_s", "time/output_s",
                                      "throughput/compose_samples_per_s"}
    samples, bad = load_samples(result["files"]["samples"])  # as `dprl eval` / `dprl grpo` read it
    assert len(samples) == 20 and bad == []
    assert all(s.seen for s in samples)  # aircraft and bird are KVG-Bench's seen domains
    rows = [s.record for s in samples]
    # each tile is its source picture, resized into the box
    r = rows[0]
    with Image.open(samples[0].image) as composite:
        for source, (x1, y1, x2, y2) in zip(r["candidate_sources"], r["candidate_boxes_px"]):
            tile = composite.convert("RGB").crop((int(x1), int(y1), int(x2), int(y2)))
            with Image.open(os.path.join(trees[r["domain"]], source)) as im:
                expected = im.convert("RGB").resize(tile.size, Image.Resampling.LANCZOS)
            assert np.array_equal(np.asarray(tile), np.asarray(expected))
    assert {r["layout"] for r in rows} > {"grid"} and max(len(r["candidate_boxes"]) for r in rows) == 4

    # two workers and smaller chunks: the same files, byte for byte
    monkeypatch.setattr(build, "CHUNK", 3)
    cfg = _config(tmp_path / "b", sources)
    cfg.workers = 2
    build_samples(cfg, progress=False)
    a, b = _digest(str(tmp_path / "a")), _digest(str(tmp_path / "b"))
    assert len(a) == 22 and a == b  # 20 images, the rows, skipped.jsonl
    cfg.output_dir, cfg.seed, cfg.workers = str(tmp_path / "c"), 1, 1
    build_samples(cfg, progress=False)
    c = _digest(str(tmp_path / "c"))
    assert sum(a[k] != c.get(k) for k in a) > 15  # another seed, other samples


def test_bad_input_is_skipped_named_and_counted(tmp_path, capsys):
    red, green, blue, grey = (200, 30, 30), (30, 200, 30), (30, 30, 200), (120, 120, 120)
    tree = image_folder(str(tmp_path / "dogs"), {"akita": [red, red], "basenji": [green, green],
                                                 "corgi": [blue], "dhole": []})
    corrupt(os.path.join(tree, "basenji", "truncated.png"))
    birds = cub(str(tmp_path / "cub"), [("001.Albatross", "a.jpg", (1, 1, 30, 20), 1),
                                        ("002.Booby", "b.jpg", (2, 2, 20, 20), 1),
                                        ("002.Booby", "c.jpg", (70, 2, 20, 20), 1),  # outside the 60 px width
                                        ("003.Cormorant", "d.jpg", (5, 5, 10, 10), 1)])
    lonely = image_folder(str(tmp_path / "fish"), {"only": [grey, grey]})  # one category: no composite
    sources = [EngineSourceConfig(kind="image_folder", path=tree, domain="dog"),
               EngineSourceConfig(kind="cub", path=birds, domain="bird"),
               EngineSourceConfig(kind="image_folder", path=lonely, domain="fish")]
    result = build_samples(_config(tmp_path / "out", sources, max_entities=3), progress=False)
    assert result["skipped"] == {"empty_category": 1, "corrupt_image": 1, "box_outside_image": 1,
                                 "small_domain": 1}
    # nothing else lost: every domain that can be composed has all its samples, the one-picture
    # category included among the candidates
    assert result["counts"]["samples_per_domain"] == {"dog": 10, "bird": 10}
    assert result["counts"]["entities"] == 5 + 3 + 2
    rows = [json.loads(line) for line in open(result["files"]["samples"])]
    assert "corgi" in {e for r in rows for e in r["candidate_entities"]}
    # in the written files, each dog (a solid colour) covers exactly its box and 0-1000 box
    colours = {"akita": red, "basenji": green, "corgi": blue}
    for r in (r for r in rows if r["domain"] == "dog"):
        px = np.asarray(Image.open(tmp_path / "out" / r["image"]), dtype=np.int16)  # (H, W, 3)
        for name, box, box1000 in zip(r["candidate_entities"], r["candidate_boxes_px"], r["candidate_boxes"]):
            ys, xs = np.nonzero((np.abs(px - np.asarray(colours[name])).max(axis=2) <= 3))
            assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == box
            w, h = r["image_width"], r["image_height"]
            assert box1000 == [round(box[0] * 1000 / w), round(box[1] * 1000 / h), round(box[2] * 1000 / w),
                               round(box[3] * 1000 / h)]
    out = capsys.readouterr().out
    for name in ("truncated.png", os.path.join(tree, "dhole"), "c.jpg", "'fish'"):
        assert name in out
    logged = [json.loads(line) for line in open(result["files"]["skipped"])]
    assert sorted(s["reason"] for s in logged) == sorted(result["skipped"])


def test_no_source_is_refused_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="sources"):
        build_samples(_config(tmp_path / "out", []), progress=False)
    assert not os.path.exists(tmp_path / "out")


def test_keep_decides_which_categories_are_composed(tmp_path):
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
    tree = image_folder(str(tmp_path / "cars"), {f"car{i}": [c, c] for i, c in enumerate(colours)})
    sources = [EngineSourceConfig(kind="image_folder", path=tree, domain="car")]
    result = build_samples(_config(tmp_path / "out", sources, max_entities=3), progress=False,
                           keep=lambda cats: [c for c in cats if c != ("car", "car2")])
    assert result["counts"]["entities"] == 8 and result["counts"]["entities_kept"] == 6
    assert result["counts"]["categories"] == {"car": 3} and result["counts"]["samples"] == 10
    rows = [json.loads(line) for line in open(result["files"]["samples"])]
    assert {e for r in rows for e in r["candidate_entities"]} == {"car0", "car1", "car3"}
