"""Output: rows in the world's KVG-Bench schema with exact 0-1000 boxes, read back unchanged by
the loaders `dprl eval`, `dprl grpo` and `dprl sft` use."""
import json
import os

import pytest
from PIL import Image

from dprl.data.engine.compose import Composite, Placement
from dprl.data.engine.output import grounding_row, image_relpath, norm1000, write_samples
from dprl.data.engine.sources import EntityImage
from dprl.data.kvg import load_samples
from dprl.data.prompts import R1_INSTRUCTION, answer_boxes, grounding_question


def _composite(qid="engine-train-bird-00000", target=1) -> Composite:
    e = [EntityImage("bird", name, f"/src/{name}.png", None, f"{name}.png", (0, 0, 10, 10))
         for name in ("Laysan Albatross", "Sooty Albatross", "Black footed Albatross")]
    boxes = [(3, 7, 101, 60), (120, 9, 250, 131), (255, 0, 280, 140)]
    return Composite(qid, "bird", "row", 280, 140, target, tuple(Placement(x, b) for x, b in zip(e, boxes)))


def test_row_has_the_worlds_fields_and_exact_boxes(small_world):
    row = grounding_row(_composite(), "train", "images/kvg_train/x.png", seen=True)
    world_row = json.loads(open(os.path.join(small_world, "kvg_train.jsonl")).readline())
    assert set(world_row) - {"response"} <= set(row)  # every field the world writes
    assert "response" not in row  # no chain of thought yet: the field is absent, not empty
    assert row["question"] == grounding_question("Sooty Albatross")
    assert row["prompt"] == row["question"] + R1_INSTRUCTION
    assert row["entity"] == "Sooty Albatross" and row["category"] == row["domain"] == "bird"
    # 0-1000: x over the width (280), y over the height (140)
    assert row["gt_boxes"] == [[429.0, 64.0, 893.0, 936.0]]
    assert row["gt_boxes_px"] == [[120.0, 9.0, 250.0, 131.0]]
    assert answer_boxes(row["answer"]) == row["gt_boxes"]
    assert row["candidate_boxes"][0] == [11.0, 50.0, 361.0, 429.0]
    assert row["candidate_boxes"][2] == [911.0, 0.0, 1000.0, 1000.0]
    assert row["candidate_boxes"][1] == row["gt_boxes"][0]
    assert (row["image_width"], row["image_height"]) == (280, 140)
    assert norm1000((0, 0, 280, 140), 280, 140) == [0.0, 0.0, 1000.0, 1000.0]

    with_cot = grounding_row(_composite(), "train", "x.png", seen=False, response="<think>a</think><answer>b</answer>")
    keys = list(with_cot)
    assert keys.index("response") == keys.index("prompt") + 1 and with_cot["seen"] is False


def _write(out_dir, rows_and_comps):
    rows = []
    for comp, response in rows_and_comps:
        rel = image_relpath("train", comp.sample_id, "png")
        os.makedirs(os.path.join(out_dir, os.path.dirname(rel)), exist_ok=True)
        Image.new("RGB", (comp.width, comp.height), (255, 255, 255)).save(os.path.join(out_dir, rel))
        rows.append(grounding_row(comp, "train", rel, True, response))
    return write_samples(str(out_dir), "train", rows)


def test_output_reads_back_with_dprls_loaders(tmp_path):
    from dprl.data.sft import load_grounding_samples
    from dprl.data.validate import DataError

    comps = [_composite(f"engine-train-bird-{i:05d}", target=i % 3) for i in range(3)]
    path = _write(tmp_path, [(c, None) for c in comps])
    assert path == str(tmp_path / "kvg_train.jsonl")
    samples, bad = load_samples(path)  # what `dprl eval` and `dprl grpo` read KVG-Bench files with
    assert bad == [] and [s.question_id for s in samples] == [c.sample_id for c in comps]
    for s, c in zip(samples, comps):
        assert s.gt_boxes == [norm1000(c.placements[c.target].box, c.width, c.height)]
        assert s.domain == "bird" and s.seen and os.path.isfile(s.image)
    with pytest.raises(DataError, match="response"):  # SFT needs the teacher's chains of thought first
        load_grounding_samples(path)

    cot = "<think>The plan.</think><answer><|box_start|>(1,2),(3,4)<|box_end|></answer>"
    path = _write(tmp_path, [(c, cot) for c in comps])
    convs, bad = load_grounding_samples(path)
    assert bad == [] and [c.response for c in convs] == [cot] * 3
    assert convs[0].prompt.endswith(R1_INSTRUCTION) and os.path.isfile(convs[0].image)
