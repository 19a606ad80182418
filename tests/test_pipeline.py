"""`dprl pipeline` end to end at toy sizes: every stage runs in its own process, the evaluation
puts the three models and the baselines side by side, and a rerun skips what is finished."""
import json
import os

import pytest

from cli_runner import run_cli

pytestmark = pytest.mark.vllm

SMALL = [
    "world.seen_domains=[aircraft, bird]", "world.unseen_domains=[dog]", "world.train_per_domain=12",
    "world.val_per_domain=1", "world.test_per_domain=2", "world.fgvr_train_per_domain=1",
    "world.fgvr_test_per_domain=1", "world.workers=1",
    "sft.max_steps=3", "sft.save_every=0", "sft.trainer.micro_batch_size=4",
    "grpo.steps=2", "grpo.save_every=0", "grpo.data.prompts_per_step=2", "grpo.rollout.n=2",
    "grpo.trainer.micro_batch_size=4", "grpo.rollout.max_tokens=8",
    "eval.rollout.backend=hf", "eval.rollout.max_tokens=8", "eval.data.max_per_domain=2",
]


def test_pipeline_runs_every_stage_and_resumes(tmp_path):
    out = tmp_path / "p"
    proc = run_cli("pipeline", "--config", "configs/pipeline_tiny.yaml", f"output_dir={out}", *SMALL,
                   timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    for stage in ("world", "sft", "grpo", "eval"):
        assert (out / f"{stage}.yaml").is_file()  # each stage's resolved config
    assert (out / "sft" / "final" / "model.safetensors").is_file()
    assert (out / "grpo" / "final" / "model.safetensors").is_file()
    assert len(open(out / "grpo" / "metrics.jsonl").readlines()) == 2
    results = json.load(open(out / "eval" / "metrics.json"))["results"]
    assert set(results) == {"untrained", "cot-sft", "cot-sft+grpo", "random_entity", "largest_entity"}
    assert "cot-sft+grpo" in proc.stdout  # the table is printed

    again = run_cli("pipeline", "--config", "configs/pipeline_tiny.yaml", f"output_dir={out}", *SMALL)
    assert again.returncode == 0, again.stderr[-3000:]
    for stage in ("world", "sft", "grpo"):
        assert f"{stage}: already done" in again.stdout


def test_a_failing_stage_stops_the_pipeline(tmp_path):
    out = tmp_path / "bad"
    # The world has no training samples for SFT to learn from: the sft stage must fail loudly.
    proc = run_cli("pipeline", "--config", "configs/pipeline_tiny.yaml", f"output_dir={out}",
                   "stages=[sft]", "sft.max_steps=1")
    assert proc.returncode == 1
    assert "stage sft failed" in proc.stderr
    assert not os.path.exists(out / "grpo")
