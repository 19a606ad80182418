"""DeepPerception's released training data, read as it is: CoT-SFT as LLaMA-Factory ShareGPT JSON,
GRPO as parquet with problem / solution / image (embedded bytes or a path). Each record becomes
the sample dprl's own files give, and a record that does not fit is set aside saying why."""
import io
import json

import pytest
from PIL import Image

from dprl.config import GRPOConfig, load_config
from dprl.data.prompts import R1_INSTRUCTION

QUESTION = "Please locate <|object_ref_start|>the {} block<|object_ref_end|> in the image."
COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60)}
BOXES = {"red": (100, 120, 400, 520), "blue": (500, 80, 760, 300), "green": (90, 600, 310, 940)}


def _box(colour):
    x1, y1, x2, y2 = BOXES[colour]
    return f"<|box_start|>({x1},{y1}),({x2},{y2})<|box_end|>"


def _reply(colour):
    return f"<think>The {colour} block is the one asked for.</think><answer>{_box(colour)}</answer>"


def _images(root) -> dict:
    """colour -> path relative to root of a small picture of that colour."""
    (root / "images").mkdir(exist_ok=True)
    for colour, rgb in COLOURS.items():
        Image.new("RGB", (112, 84), rgb).save(root / "images" / f"{colour}.png")
    return {c: f"images/{c}.png" for c in COLOURS}


def _sharegpt(colour, image, user_prefix="<image>"):
    return {"messages": [{"role": "user", "content": user_prefix + QUESTION.format(colour) + R1_INSTRUCTION},
                         {"role": "assistant", "content": _reply(colour)}],
            "images": [image]}


def test_sharegpt_json_gives_the_samples_the_jsonl_layout_gives(tmp_path, tiny_model_dir):
    from dprl.data.sft import encode, load_grounding
    from dprl.models.loading import load_processor

    images = _images(tmp_path)
    released = tmp_path / "cot-sft-block.json"
    released.write_text(json.dumps([_sharegpt(c, images[c]) for c in COLOURS], indent=2))
    ours = tmp_path / "train.jsonl"
    ours.write_text("".join(json.dumps({"question_id": f"row-{i}", "prompt": QUESTION.format(c) + R1_INSTRUCTION,
                                        "response": _reply(c), "image": images[c]}) + "\n"
                            for i, c in enumerate(COLOURS)))
    a, b = load_grounding(str(released)), load_grounding(str(ours))
    assert [(c.prompt, c.response, c.image, c.sample_id) for c in a] == \
           [(c.prompt, c.response, c.image, c.sample_id) for c in b]
    assert len(a) == 3 and "<image>" not in a[0].prompt
    processor = load_processor(tiny_model_dir)
    ea, eb = encode(processor, a[0], 1024), encode(processor, b[0], 1024)
    assert ea.keys() == eb.keys() and all(ea[k].equal(eb[k]) for k in ea)
    text = processor.tokenizer.decode(ea["input_ids"])
    assert "<|vision_start|><|image_pad|>" in text and "<image>" not in text


SHAREGPT_MISFITS = [  # (how the good record is changed, what the error must say)
    (lambda r: dict(r, images=r["images"] * 2), "exactly one"),
    (lambda r: dict(r, images=[]), "exactly one"),
    (lambda r: dict(r, messages=[{"role": "system", "content": "Be brief."}] + r["messages"]), "one user turn"),
    (lambda r: dict(r, messages=r["messages"] * 2), "one user turn"),
    (lambda r: _sharegpt("red", r["images"][0], user_prefix=""), "placeholder"),
    (lambda r: _sharegpt("red", r["images"][0], user_prefix="<image><image>"), "placeholder"),
    (lambda r: dict(r, messages=[r["messages"][0], {"role": "assistant", "content": " "}]), "assistant turn is empty"),
    (lambda r: dict(r, images=["images/missing.png"]), "does not exist"),
    (lambda r: {"images": r["images"]}, "`messages` is not a list"),
]


def test_sharegpt_records_that_do_not_fit_are_set_aside_saying_why(tmp_path):
    from dprl.data.sft import load_grounding_samples

    images = _images(tmp_path)
    good = _sharegpt("red", images["red"])
    path = tmp_path / "cot-sft.json"
    path.write_text(json.dumps([good] + [change(good) for change, _ in SHAREGPT_MISFITS]))
    convs, bad = load_grounding_samples(str(path))
    assert [c.sample_id for c in convs] == ["row-0"]
    assert [b["question_id"] for b in bad] == [f"row-{i + 1}" for i in range(len(SHAREGPT_MISFITS))]
    for b, (_, reason) in zip(bad, SHAREGPT_MISFITS):
        assert reason in b["error"], b


def _solution(colour):
    return f"<answer> <|object_ref_start|>the {colour} block<|object_ref_end|>{_box(colour)} </answer>"


def _grpo_parquet(path, rows: dict, embed: bool, root=None):
    """The released GRPO layout: `image` a datasets Image holding the file's bytes, or a path."""
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    if embed:
        rows = dict(rows, image=[{"bytes": (root / p).read_bytes(), "path": None} for p in rows["image"]])
    image = ImageFeature() if embed else Value("string")
    features = Features({"problem": Value("string"), "solution": Value("string"), "image": image})
    Dataset.from_dict(rows, features=features).to_parquet(str(path))
    return str(path)


@pytest.mark.parametrize("embed", [True, False], ids=["image_bytes", "image_path"])
def test_grpo_parquet_gives_grounding_samples(tmp_path, embed):
    from dprl.data.kvg import open_image
    from dprl.train.grpo import load_prompts

    images = _images(tmp_path)
    rows = {"problem": [QUESTION.format(c) for c in COLOURS], "solution": [_solution(c) for c in COLOURS],
            "image": [images[c] for c in COLOURS]}
    path = _grpo_parquet(tmp_path / "kvg_grpo.parquet", rows, embed, tmp_path)
    samples, bad = load_prompts(load_config(GRPOConfig, None, [f"data.path={path}"]))
    assert bad == [] and [s.question_id for s in samples] == ["row-0", "row-1", "row-2"]
    for s, colour in zip(samples, COLOURS):
        assert s.question == QUESTION.format(colour)
        assert s.gt_boxes == [list(map(float, BOXES[colour]))]
        im = open_image(s.image, str(tmp_path))
        assert im.size == (112, 84) and im.getpixel((5, 5)) == COLOURS[colour]


def test_grpo_parquet_rows_that_do_not_fit_are_set_aside_saying_why(tmp_path):
    from dprl.data.validate import DataError
    from dprl.train.grpo import load_prompts

    images = _images(tmp_path)
    rows = {"problem": [QUESTION.format("red"), QUESTION.format("red"), "  ", QUESTION.format("red")],
            "solution": [_solution("red"), "<answer> the red block </answer>", _solution("red"), _solution("red")],
            "image": [images["red"], images["red"], images["red"], "images/missing.png"]}
    path = _grpo_parquet(tmp_path / "kvg_grpo.parquet", rows, False)
    samples, bad = load_prompts(load_config(GRPOConfig, None, [f"data.path={path}"]))
    assert [s.question_id for s in samples] == ["row-0"]
    assert [(b["question_id"], b["error"].split(" ")[0]) for b in bad] == \
           [("row-1", "no"), ("row-2", "`problem`"), ("row-3", "image")]
    assert "does not exist" in bad[2]["error"]
    with pytest.raises(DataError, match="category"):
        load_prompts(load_config(GRPOConfig, None, [f"data.path={path}", "data.domains=[aircraft]"]))


def test_grpo_parquet_without_the_columns_is_named(tmp_path):
    from dprl.train.grpo import load_prompts

    path = _grpo_parquet(tmp_path / "x.parquet", {"problem": ["q"], "solution": ["s"], "image": ["a.png"]}, False)
    import pyarrow.parquet as pq

    pq.write_table(pq.read_table(path).drop(["image"]), path)
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['image'\]"):
        load_prompts(load_config(GRPOConfig, None, [f"data.path={path}"]))


def test_embedded_image_bytes_are_screened_like_files(tmp_path, tiny_model_dir):
    """A released GRPO file holds its pictures as bytes: a corrupt one is set aside by id too."""
    from dprl.models.loading import load_processor
    from dprl.train.grpo import load_prompts

    images = _images(tmp_path)
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(png, "PNG")
    (tmp_path / "images" / "cut.png").write_bytes(png.getvalue()[:60])
    rows = {"problem": [QUESTION.format("red")] * 2, "solution": [_solution("red")] * 2,
            "image": [images["red"], "images/cut.png"]}
    path = _grpo_parquet(tmp_path / "kvg_grpo.parquet", rows, True, tmp_path)
    samples, bad = load_prompts(load_config(GRPOConfig, None, [f"data.path={path}"]),
                                load_processor(tiny_model_dir))
    assert [s.question_id for s in samples] == ["row-0"]
    assert [b["question_id"] for b in bad] == ["row-1"] and "does not decode" in bad[0]["error"]
