"""load_samples on hand-made rows: duplicate ids, inverted and degenerate ground-truth boxes."""
import json

import pytest
from PIL import Image

from dprl.data.kvg import load_samples


def _write(tmp_path, answers: dict) -> str:
    Image.new("RGB", (8, 8)).save(tmp_path / "im.png")
    rows = [{"question_id": qid, "question": "Find <|object_ref_start|>the plane<|object_ref_end|>.",
             "image": "im.png", "answer": answer, "category": "aircraft"}
            for qid, answer in answers]
    path = tmp_path / "kvg.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _box(x1, y1, x2, y2) -> str:
    return f"<|box_start|>({x1},{y1}),({x2},{y2})<|box_end|>"


def test_duplicate_question_ids_are_rejected_with_both_rows(tmp_path):
    path = _write(tmp_path, [("a", _box(0, 0, 10, 10)), ("b", _box(0, 0, 10, 10)),
                             ("a", _box(5, 5, 20, 20))])
    with pytest.raises(ValueError, match=r"question_id 'a'.*rows 1 and 3"):
        load_samples(path, "kvg")


def test_inverted_boxes_are_reordered_and_counted_degenerate_ones_are_bad(tmp_path):
    path = _write(tmp_path, [("ok", _box(0, 0, 10, 10)), ("flipped", _box(100, 50, 20, 200)),
                             ("flat", _box(10, 10, 10, 90)),
                             ("two", _box(0, 0, 10, 10) + _box(30, 40, 20, 50))])
    samples, bad = load_samples(path, "kvg")
    by_id = {s.question_id: s for s in samples}
    assert set(by_id) == {"ok", "flipped", "two"}
    assert by_id["flipped"].gt_boxes == [[20, 50, 100, 200]]
    assert by_id["two"].gt_boxes == [[0, 0, 10, 10], [20, 40, 30, 50]]
    assert [by_id[k].boxes_repaired for k in ("ok", "flipped", "two")] == [0, 1, 1]
    assert [b["question_id"] for b in bad] == ["flat"] and "zero area" in bad[0]["error"]


def test_a_corrupt_embedded_image_is_its_own_samples_problem(tmp_path):
    """KVG-Bench ships its pictures as bytes in the parquet: reading the rows decodes none of them,
    so one corrupt picture fails only when its own sample opens it."""
    import io

    from datasets import Dataset, Features, Image as ImageFeature, Value

    from dprl.data.kvg import open_image

    good = io.BytesIO()
    Image.new("RGB", (8, 8)).save(good, format="PNG")
    rows = {"question_id": ["good", "broken"],
            "question": ["Find <|object_ref_start|>the plane<|object_ref_end|>."] * 2,
            "image": [{"bytes": good.getvalue(), "path": None}, {"bytes": b"not a picture", "path": None}],
            "answer": [_box(0, 0, 10, 10)] * 2, "category": ["aircraft"] * 2}
    features = Features({"question_id": Value("string"), "question": Value("string"),
                         "image": ImageFeature(), "answer": Value("string"), "category": Value("string")})
    path = str(tmp_path / "kvg.parquet")
    Dataset.from_dict(rows, features=features).to_parquet(path)
    samples, bad = load_samples(path, "kvg")
    assert [s.question_id for s in samples] == ["good", "broken"] and not bad
    assert open_image(samples[0].image, "").size == (8, 8)
    with pytest.raises(Exception):
        open_image(samples[1].image, "")


def test_kvg_bench_categories_fall_in_its_split_by_default(tmp_path):
    """KVG-Bench spells the seen reptile domain 'reptilia'; eval's default split must count it seen."""
    from dprl.config import EvalDataConfig

    Image.new("RGB", (8, 8)).save(tmp_path / "im.png")
    rows = [{"question_id": cat, "question": "Find <|object_ref_start|>it<|object_ref_end|>.", "image": "im.png",
             "answer": _box(0, 0, 10, 10), "category": cat} for cat in ("reptilia", "mollusca")]
    path = tmp_path / "bench.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples, _ = load_samples(str(path), "kvg", seen_domains=EvalDataConfig().seen_domains)
    assert {s.question_id: s.seen for s in samples} == {"reptilia": True, "mollusca": False}
