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
