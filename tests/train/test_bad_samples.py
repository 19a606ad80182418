"""One bad sample must not kill a run: samples whose image does not decode, whose aspect ratio
Qwen2-VL refuses, or whose prompt is longer than the run allows are set aside when the data is
loaded, listed by id in <output_dir>/bad_samples.jsonl, counted in the metrics, and the run trains
on the rest exactly as it would on a file holding only the rest."""
import io
import json
import os

import pytest
from PIL import Image

from dprl.config import GRPOConfig, SFTConfig, load_config
from dprl.train.metrics import read_metrics


def write_bad_images(root) -> dict:
    """name -> path: bytes that are no image, a PNG and a JPEG cut short, a 10000x10 picture."""
    os.makedirs(root, exist_ok=True)
    noise = Image.effect_noise((64, 64), 60).convert("RGB")
    png, jpeg = io.BytesIO(), io.BytesIO()
    noise.save(png, "PNG")
    noise.save(jpeg, "JPEG")
    files = {"garbage.png": b"these bytes are not a picture",
             "cut.png": png.getvalue()[: len(png.getvalue()) // 2],
             "cut.jpg": jpeg.getvalue()[: len(jpeg.getvalue()) * 3 // 4]}
    out = {}
    for name, data in files.items():
        out[name] = os.path.join(root, name)
        with open(out[name], "wb") as fh:
            fh.write(data)
    out["wide.png"] = os.path.join(root, "wide.png")
    Image.new("RGB", (10000, 10), (200, 30, 30)).save(out["wide.png"])
    return out


def _absolute(rows, root):
    return [dict(r, image=os.path.join(root, r["image"])) for r in rows]


def _write(path, rows):
    with open(path, "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    return str(path)


def _interleave(good, bad):
    """Bad rows between the good ones: one after every second good row while they last."""
    out, bad = [], list(bad)
    for i, row in enumerate(good):
        if i % 2 == 1 and bad:
            out.append(bad.pop(0))
        out.append(row)
    return out + bad


# SFT: id -> what its error must say
SFT_BAD = {"bad-garbage": "does not decode", "bad-png-cut": "truncated", "bad-jpeg-cut": "truncated",
           "bad-wide": "aspect ratio", "bad-long": "max_length", "bad-missing": "does not exist",
           "bad-empty-reply": "empty"}


def _sft_files(toy_data, tmp_path):
    """(file with bad samples among the good ones, file with the good ones only)."""
    good = _absolute([json.loads(line) for line in open(toy_data["train"])], toy_data["root"])
    imgs = write_bad_images(str(tmp_path / "bad-images"))
    base = good[0]
    bad = [dict(base, question_id="bad-garbage", image=imgs["garbage.png"]),
           dict(base, question_id="bad-png-cut", image=imgs["cut.png"]),
           dict(base, question_id="bad-jpeg-cut", image=imgs["cut.jpg"]),
           dict(base, question_id="bad-wide", image=imgs["wide.png"]),
           dict(base, question_id="bad-long", prompt="Look closely at every block. " * 150 + base["prompt"]),
           dict(base, question_id="bad-missing", image=str(tmp_path / "nowhere.png")),
           dict(base, question_id="bad-empty-reply", response="")]
    return _write(tmp_path / "mixed.jsonl", _interleave(good, bad)), _write(tmp_path / "clean.jsonl", good)


def _sft_cfg(out, path, model_dir):
    return load_config(SFTConfig, None, [
        f"output_dir={out}", f"data.train_path={path}", f"model.path={model_dir}", "trainer.dtype=float32",
        "trainer.zero_stage=0", "max_steps=2", "trainer.micro_batch_size=2", "trainer.lr=1e-3",
        "data.max_length=512"])


def test_sft_sets_bad_samples_aside_and_trains_as_on_the_good_ones(toy_data, tiny_model_dir, tmp_path, capsys):
    from dprl.train.sft import run_sft

    mixed, clean = _sft_files(toy_data, tmp_path)
    run_sft(_sft_cfg(tmp_path / "mixed", mixed, tiny_model_dir))
    printed = capsys.readouterr().out
    run_sft(_sft_cfg(tmp_path / "clean", clean, tiny_model_dir))

    bad = [json.loads(line) for line in open(tmp_path / "mixed" / "bad_samples.jsonl")]
    assert sorted(b["question_id"] for b in bad) == sorted(SFT_BAD)
    for b in bad:
        assert SFT_BAD[b["question_id"]] in b["error"], b
    assert f"{len(SFT_BAD)} bad sample(s) skipped" in printed
    assert open(tmp_path / "clean" / "bad_samples.jsonl").read() == ""
    a = read_metrics(str(tmp_path / "mixed" / "metrics.jsonl"))
    b = read_metrics(str(tmp_path / "clean" / "metrics.jsonl"))
    assert [r["data/bad_samples"] for r in a] == [len(SFT_BAD)] * 2
    assert [r["data/bad_samples"] for r in b] == [0, 0]
    # Filtered before the order is drawn: the same batches, so the same losses, bit for bit.
    assert [r["train/loss"] for r in a] == [r["train/loss"] for r in b]


def test_prompt_length_screen_counts_what_encode_makes(toy_data, tiny_model_dir):
    """The screen counts prompt tokens from the text and the image's size alone; it must agree
    with the processor, which expands the image, or it would pass prompts encode refuses."""
    from dprl.data.sft import IGNORE_INDEX, check_encodable, encode, load_grounding
    from dprl.models.loading import load_processor

    processor = load_processor(tiny_model_dir)
    conv = load_grounding(toy_data["train"])[0]
    P = int((encode(processor, conv, 1024)["labels"] == IGNORE_INDEX).sum())
    check_encodable(processor, conv, P + 1)
    with pytest.raises(ValueError, match=f"{P} tokens"):
        check_encodable(processor, conv, P)


def test_grpo_prompt_length_screen_counts_what_the_processor_makes(world, tiny_model_dir):
    from dprl.data.kvg import load_samples, open_image
    from dprl.models.loading import load_processor
    from dprl.models.chat import prompt_text
    from dprl.train.grpo_data import grounding_request, prompt_tokens

    processor = load_processor(tiny_model_dir)
    sample = load_samples(os.path.join(world, "kvg_train.jsonl"))[0][0]
    request = grounding_request(sample.question, open_image(sample.image, world))
    ids = processor(text=[prompt_text(processor, request.messages)], images=request.images)["input_ids"][0]
    assert prompt_tokens(processor, sample, world) == len(ids)


# GRPO: id -> what its error must say
GRPO_BAD = {"bad-garbage": "does not decode", "bad-png-cut": "truncated", "bad-wide": "aspect ratio",
            "bad-long": "max_model_len", "bad-missing": "does not exist"}


@pytest.fixture(scope="module")
def world(small_world):
    return small_world


def test_grpo_sets_bad_prompts_aside_and_reports_them(world, tmp_path, capsys):
    from dprl.train.grpo import GRPOTrainer

    good = _absolute([json.loads(line) for line in open(os.path.join(world, "kvg_train.jsonl"))], world)
    imgs = write_bad_images(str(tmp_path / "bad-images"))
    base = good[0]
    bad = [dict(base, question_id="bad-garbage", image=imgs["garbage.png"]),
           dict(base, question_id="bad-png-cut", image=imgs["cut.png"]),
           dict(base, question_id="bad-wide", image=imgs["wide.png"]),
           dict(base, question_id="bad-long", question="Look closely at every aircraft. " * 120 + base["question"]),
           # The row GRPO used to drop without a word.
           dict(base, question_id="bad-missing", image=str(tmp_path / "nowhere.png"))]
    path = _write(tmp_path / "mixed.jsonl", _interleave(good, bad))
    out = tmp_path / "run"
    cfg = load_config(GRPOConfig, None, [
        f"output_dir={out}", f"data.path={path}", "rollout.backend=hf", "rollout.max_tokens=8",
        "rollout.max_model_len=256", "rollout.n=2", "data.prompts_per_step=2", "trainer.micro_batch_size=4",
        "trainer.grad_accum_steps=1", "steps=1", "save_every=0", "grpo.beta=0.0"])
    t = GRPOTrainer(cfg)
    assert [s.question_id for s in t.samples] == [r["question_id"] for r in good]
    t.train()
    printed = capsys.readouterr().out
    reported = [json.loads(line) for line in open(out / "bad_samples.jsonl")]
    assert sorted(b["question_id"] for b in reported) == sorted(GRPO_BAD)
    for b in reported:
        assert GRPO_BAD[b["question_id"]] in b["error"], b
    assert f"{len(GRPO_BAD)} bad sample(s) skipped" in printed
    assert read_metrics(str(out / "metrics.jsonl"))[0]["data/bad_samples"] == len(GRPO_BAD)
