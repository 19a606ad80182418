"""One bad sample costs only itself: an image the processor refuses, a prompt longer than the
model takes, or a sample the engine fails on inside a batch."""
import json
import os

import pytest
from PIL import Image

from dprl.config import EvalConfig, load_config
from dprl.data.kvg import Sample
from dprl.data.prompts import answer_boxes
from dprl.eval.preflight import check_sample
from dprl.eval.evaluate import _answer_or_isolate, print_summary, read_predictions, run_eval
from dprl.models.loading import load_processor
from dprl.rollout import Completion


def _rows(small_world, n):
    rows = [json.loads(line) for line in open(os.path.join(small_world, "kvg_test.jsonl"))]
    rows = [r for r in rows if r["domain"] in ("aircraft", "dog")][:n]
    for r in rows:
        r["image"] = os.path.join(small_world, r["image"])
    return rows


def test_hf_eval_survives_an_extreme_image_and_a_long_prompt(small_world, tiny_model_dir, tmp_path, capsys):
    rows = _rows(small_world, 3)
    x1, y1, x2, y2 = answer_boxes(rows[2]["answer"])[0]
    rows[2]["answer"] = f"<|box_start|>({x2:g},{y1:g}),({x1:g},{y2:g})<|box_end|>"  # x2 < x1: repaired
    Image.new("RGB", (10000, 10), "white").save(tmp_path / "strip.png")  # aspect 1000 > 200
    strip = dict(rows[0], question_id="strip", image=str(tmp_path / "strip.png"))
    long = dict(rows[1], question_id="long", question=rows[1]["question"] + " Look closely." * 150)
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [strip] + rows + [long]))
    out = tmp_path / "eval"
    cfg = load_config(EvalConfig, "configs/eval_tiny.yaml", [
        f"output_dir={out}", f"data.path={path}", "rollout.backend=hf", "rollout.max_tokens=4",
        "rollout.max_model_len=400", "batch_size=8", "baselines=[]",
        f"checkpoints=[{{name: m, path: {tiny_model_dir}}}]"])
    summary = run_eval(cfg, progress=False)
    errors = {b["question_id"]: b["error"] for b in summary["bad_samples"]}
    assert set(errors) == {"strip", "long"}
    assert "aspect ratio" in errors["strip"] and "10000x10" in errors["strip"]
    assert "rollout.max_model_len >=" in errors["long"] and "(now 400)" in errors["long"]
    assert set(read_predictions(str(out / "m" / "predictions.jsonl"))) == {r["question_id"] for r in rows}
    assert summary["samples"] == 3
    assert summary["repaired_boxes"] == [{"question_id": rows[2]["question_id"], "boxes": 1}]
    print_summary(summary, str(out))
    printed = capsys.readouterr().out
    assert "2 bad sample(s) skipped" in printed and "1 ground-truth box(es) in 1 sample(s)" in printed


def test_preflight_counts_the_image_tokens(tiny_model_dir):
    processor = load_processor(tiny_model_dir)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where?"}]}]
    image = Image.new("RGB", (112, 112))  # 4 x 4 merged patches with the tiny processor
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    enc = processor(text=[text], images=[image])
    n = len(enc["input_ids"][0])  # the processor's own expansion of the image slot
    assert check_sample(processor, messages, [image], 10, n + 10) is None
    assert "needs rollout.max_model_len >= " + str(n + 10) in check_sample(processor, messages, [image], 10, n + 9)


class _FlakyEngine:
    """Fails any generate call whose prompts include one mentioning BOOM (like vLLM's
    whole-batch rejection); answers the others with their own text."""

    def __init__(self):
        self.calls = 0

    def generate(self, requests, max_tokens=None):
        self.calls += 1
        texts = [r.messages[-1]["content"][-1]["text"] for r in requests]
        if any("BOOM" in t for t in texts):
            raise ValueError("prompt too long")
        return [Completion(i, [1, 2], t, [], "stop") for i, t in enumerate(texts)]


def _samples(*questions):
    return [Sample(f"q{i}", q, None, "", "aircraft", True) for i, q in enumerate(questions)]


def test_a_failing_batch_is_retried_sample_by_sample():
    cfg = load_config(EvalConfig, "configs/eval_tiny.yaml", ["prompt_mode=plain", "parse.scope=anywhere"])
    batch = _samples("a", "BOOM", "c")
    answered, bad = _answer_or_isolate(cfg, _FlakyEngine(), lambda o: o.text, batch, [None] * 3)
    assert [(s.question_id, a[1]) for s, a in answered] == [("q0", "a"), ("q2", "c")]
    assert bad == [{"question_id": "q1", "error": "generate: ValueError: prompt too long"}]
    # every sample failing on its own is the engine's fault, not the data's: that raises
    with pytest.raises(ValueError):
        _answer_or_isolate(cfg, _FlakyEngine(), lambda o: o.text, _samples("BOOM", "BOOM"), [None] * 2)
