"""`dprl grpo` as a user runs it: vLLM colocated in the process, one rank and two (torchrun,
ZeRO-3 over gloo). Each run is a fresh process (one vLLM engine per process)."""
import json
import os
import subprocess
import sys

import pytest

from cli_runner import child_env

pytestmark = pytest.mark.vllm
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def world(small_world):
    return small_world


def _grpo(world, out, nproc=1, *extra):
    args = ["grpo", "--config", "configs/grpo_tiny.yaml", f"output_dir={out}",
            f"data.path={world}/kvg_train.jsonl", "steps=2", "save_every=0", "rollout.max_tokens=12",
            "rollout.n=2", "data.prompts_per_step=2", "trainer.micro_batch_size=2",
            "trainer.grad_accum_steps=2", "sync.bucket_mb=0.1", *extra]
    if nproc == 1:
        cmd = [sys.executable, "-m", "dprl.cli", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "dprl.cli", *args]
    env = child_env(OMP_NUM_THREADS=str(max(1, 2 // nproc)))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    return proc, rows


def _check(rows, out):
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r["staleness/abs_logp_diff_max"] < 1e-4  # engine == trainer after every sync
        assert r["sync/buckets"] >= 3 and r["time/rollout_s"] > 0
    assert os.path.isfile(os.path.join(out, "final", "model.safetensors"))
    assert os.path.isfile(os.path.join(out, "config.yaml"))


def test_single_process_with_vllm(world, tmp_path):
    proc, rows = _grpo(world, str(tmp_path / "run"))
    _check(rows, str(tmp_path / "run"))
    assert "last step: reward" in proc.stdout


def test_two_ranks_zero3(world, tmp_path):
    out = str(tmp_path / "run2")
    # Dynamic sampling on: the untrained model scores 0 everywhere, so each rank runs every
    # refill round on its own engine and still trains on a full batch of flat groups.
    _, rows = _grpo(world, out, 2, "trainer.zero_stage=3", "trainer.param_persistence_threshold=0",
                    "grpo.dynamic_sampling=true", "grpo.max_sampling_rounds=2")
    _check(rows, out)
    for r in rows:
        assert r["sampling/rounds"] == 2 and r["sampling/shortfall_groups"] == 2
        assert r["sampling/groups_sampled"] == 4 and r["train/zero_variance_groups"] == 2
    # The final checkpoint holds whole (gathered) tensors, loadable by transformers.
    from dprl.models.loading import load_model

    model = load_model(os.path.join(out, "final"))
    assert model.lm_head.weight.shape[0] > 700
