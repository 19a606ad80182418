"""`dprl eval` end to end with the HF generate backend: outputs, resuming, bad samples."""
import json
import os

import pytest

from cli_runner import run_cli
from dprl.config import EvalConfig, load_config
from dprl.eval.evaluate import read_predictions, run_eval


def _data_with_bad_rows(small_world, tmp_path) -> str:
    rows = [json.loads(line) for line in open(os.path.join(small_world, "kvg_test.jsonl"))]
    rows = [r for r in rows if r["domain"] in ("aircraft", "dog")][:4]
    for r in rows:
        r["image"] = os.path.join(small_world, r["image"])
    missing = dict(rows[0], question_id="bad-image", image=os.path.join(small_world, "nope.png"))
    unreadable = dict(rows[1], question_id="bad-answer", answer="somewhere on the left")
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows + [missing, unreadable]))
    return str(path)


def test_hf_eval_writes_results_resumes_and_reports_bad_samples(small_world, tiny_model_dir, tmp_path):
    data = _data_with_bad_rows(small_world, tmp_path)
    out = tmp_path / "eval"
    cfg = load_config(EvalConfig, "configs/eval_tiny.yaml", [
        f"output_dir={out}", f"data.path={data}", "rollout.backend=hf", "rollout.max_tokens=6", "batch_size=3",
        f"checkpoints=[{{name: a, path: {tiny_model_dir}}}, {{name: b, path: {tiny_model_dir}}}]"])
    summary = run_eval(cfg, progress=False)
    assert {b["question_id"] for b in summary["bad_samples"]} == {"bad-image", "bad-answer"}
    assert summary["samples"] == 4
    a = read_predictions(str(out / "a" / "predictions.jsonl"))
    assert len(a) == 4 and all(0 < r["tokens"] <= 6 for r in a.values())
    # greedy: two copies of one checkpoint answer identically
    b = read_predictions(str(out / "b" / "predictions.jsonl"))
    assert {k: r["prediction"] for k, r in a.items()} == {k: r["prediction"] for k, r in b.items()}
    metrics = json.load(open(out / "metrics.json"))
    assert set(metrics["results"]) == {"a", "b", "random_entity", "largest_entity"}
    assert metrics["results"]["a"]["overall"]["n"] == 4
    table = open(out / "table.md").read()
    assert "| aircraft | seen avg | dog | unseen avg | overall |" in table and "| random_entity |" in table

    # Resume: drop one finished answer (as if the run stopped there); only that one is redone.
    lines = open(out / "a" / "predictions.jsonl").read().splitlines()
    (out / "a" / "predictions.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:10])
    run_eval(cfg, progress=False)
    again = read_predictions(str(out / "a" / "predictions.jsonl"))
    assert again == a
    assert len(open(out / "b" / "predictions.jsonl").read().splitlines()) == 4  # b untouched


def test_eval_rejects_bad_config_and_empty_data(tmp_path, small_world):
    out = run_cli("eval", "--config", "configs/eval_tiny.yaml", "prompt_mode=plain",
                  f"output_dir={tmp_path / 'e'}")
    assert out.returncode == 2 and "parse.scope" in out.stderr
    out = run_cli("eval", "--config", "configs/eval_tiny.yaml", "data.domains=[dragon]",
                  f"data.path={os.path.join(small_world, 'kvg_test.jsonl')}", f"output_dir={tmp_path / 'e'}")
    assert out.returncode == 2 and "no usable samples" in out.stderr
