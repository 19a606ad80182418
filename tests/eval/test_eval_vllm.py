"""`dprl eval` with vLLM greedy, as a user runs it: same answers as HF greedy, a printed table."""
import json
import os

import pytest

from cli_runner import run_cli
from dprl.config import EvalConfig, load_config
from dprl.eval.evaluate import read_predictions, run_eval


@pytest.mark.vllm
def test_vllm_eval_matches_hf_greedy(small_world, tiny_model_dir, tmp_path):
    args = [f"data.path={os.path.join(small_world, 'kvg_test.jsonl')}", "data.domains=[aircraft, dog]",
            "data.max_per_domain=2", "rollout.max_tokens=8", "prompt_mode=cot2", "parse.scope=anywhere",
            "describe_max_tokens=4", f"checkpoints=[{{name: m, path: {tiny_model_dir}}}]"]
    out = run_cli("eval", "--config", "configs/eval_tiny.yaml", f"output_dir={tmp_path / 'v'}", *args)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| model | aircraft | seen avg | dog | unseen avg | overall |" in out.stdout
    assert "| m |" in out.stdout and "| largest_entity |" in out.stdout
    vllm = read_predictions(str(tmp_path / "v" / "m" / "predictions.jsonl"))
    assert len(vllm) == 4 and all(r["description"] is not None for r in vllm.values())

    cfg = load_config(EvalConfig, "configs/eval_tiny.yaml", [f"output_dir={tmp_path / 'h'}", "rollout.backend=hf", *args])
    run_eval(cfg, progress=False)
    hf = read_predictions(str(tmp_path / "h" / "m" / "predictions.jsonl"))
    for qid, r in vllm.items():  # fp32 greedy: both engines pick the same tokens
        assert (r["description"], r["prediction"]) == (hf[qid]["description"], hf[qid]["prediction"])
    assert json.load(open(tmp_path / "v" / "metrics.json"))["backend"] == "vllm"
