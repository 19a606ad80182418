"""The whole stack: vLLM samples for image+text prompts in-process, transformers scores the same
tokens, and the log-probs agree in fp32. Each run is a fresh process, as a user would run it."""
import json

import pytest

from cli_runner import run_cli

pytestmark = pytest.mark.vllm


def _run(tmp_path, *overrides):
    out_dir = tmp_path / "run"
    proc = run_cli("smoke", "--config", "configs/smoke_tiny.yaml", f"output_dir={out_dir}", *overrides)
    result_file = out_dir / "results.json"
    result = json.load(open(result_file)) if result_file.exists() else None
    return proc, result, out_dir


def test_vllm_and_transformers_logprobs_agree_qwen2_vl(tmp_path):
    proc, result, out_dir = _run(tmp_path, "num_prompts=2", "rollout.n=3", "rollout.max_tokens=24")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert result["ok"] and result["completions"] == 6
    assert result["max_abs_logprob_err"] < 1e-4
    for s in result["samples"]:
        assert 1 <= s["tokens"] <= 24 and s["finish"] in ("stop", "length")
        assert s["sum_logprob_vllm"] < 0  # real log-probs of a random model, not zeros
        assert abs(s["sum_logprob_vllm"] - s["sum_logprob_hf"]) < 1e-3
    assert (out_dir / "config.yaml").exists()  # the resolved config sits beside the results
    assert "AGREE" in proc.stdout


def test_qwen2_5_vl_with_temperature_top_k_top_p(tmp_path):
    proc, result, _ = _run(tmp_path, "model.tiny.arch=qwen2_5_vl", "num_prompts=1", "rollout.n=2",
                           "rollout.temperature=0.7", "rollout.top_k=40", "rollout.top_p=0.9")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert result["ok"] and result["completions"] == 2


def test_mismatch_is_detected(tmp_path):
    # A tolerance below fp32 noise must fail the run: the check is real, not a formality.
    proc, result, _ = _run(tmp_path, "num_prompts=1", "rollout.n=2", "atol=1e-12")
    assert proc.returncode == 1 and result is not None and not result["ok"]
    assert "DISAGREE" in proc.stdout
