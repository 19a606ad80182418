"""Colocated DeepSpeed ZeRO-3 trainer + vLLM engine, in a world of one and with 2 torchrun ranks.

Each run is a fresh process (one vLLM engine per process) executing tests/train/colocated_run.py,
which generates, takes one optimizer step and syncs the weights bucket by bucket; the assertions
here read the numbers it wrote.
"""
import json
import os
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.vllm

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SCRIPT = os.path.join(HERE, "colocated_run.py")
FP32_TOL = 1e-5  # engine vs trainer log-probs in fp32 (measured ~1e-6)


def _run(cmd, out_dir, nproc=1):
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, 2 // nproc)),
               PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return [json.load(open(out_dir / f"rank{r}.json")) for r in range(nproc)]


def _check_sync(r):
    # Before training the engine and the trainer agree; the step moves the weights; after the
    # (small-bucket) sync the engine follows the trainer again and no longer matches its old self.
    assert r["pre_step_engine_vs_trainer"] < FP32_TOL
    assert r["post_sync_engine_vs_trainer"] < FP32_TOL
    assert r["post_sync_vs_pre_sync_engine"] > 1e-2
    assert r["sync_small"]["sync/buckets"] >= 4  # really bucketed: embed, blocks, norm, lm_head
    assert r["sync_small"]["sync/bytes"] == 4 * r["full_elements"]  # whole fp32 tensors went in
    # Only what training changes is sent: the frozen vision tower stays out.
    assert r["synced_names"] and not any(".visual." in n for n in r["synced_names"])
    assert any(n.startswith("model.language_model.layers.") for n in r["synced_names"])
    assert "lm_head.weight" in r["synced_names"]
    # The fresh samples' staleness: rollout log-probs equal the trainer's, ratio 1.
    s = r["staleness"]
    assert s["staleness/abs_logp_diff_max"] < FP32_TOL and s["staleness/tokens"] > 0
    assert abs(s["staleness/ratio_min"] - 1) < 1e-4 and abs(s["staleness/ratio_max"] - 1) < 1e-4
    assert r["fresh_weights_version"] >= 1
    for c in r["completions"]:
        assert len(c["tokens"]) == len(c["logprobs"]) >= 1 and c["finish"] in ("stop", "length")
        assert c["weights_version"] == 0 and c["prompt_length"] > 16


def _blocks_whole(buckets):
    """No decoder block's tensors are spread over two buckets."""
    seen = {}
    for k, names in enumerate(buckets):
        for n in names:
            if ".layers." in n:
                block = n.split(".layers.")[0] + ".layers." + n.split(".layers.")[1].split(".")[0]
                assert seen.setdefault(block, k) == k, f"{block} split across buckets"
    return True


def test_world_of_one(tiny_model_dir, tmp_path):
    (r,) = _run([sys.executable, SCRIPT, tiny_model_dir, str(tmp_path), "--checks", "all"], tmp_path)
    _check_sync(r)
    assert r["same_seed_equal"] and not r["other_seed_equal"]
    assert r["small_vs_one_bucket"] < 1e-6  # bucket size does not change what the engine holds
    assert r["sync_one"]["sync/buckets"] == 1
    assert r["generate_while_asleep_raises"]
    assert _blocks_whole(r["buckets_small"])
    assert [c["prompt"] for c in r["completions"]] == [0, 0, 1, 1]  # n=2 per prompt, in order


def test_two_ranks_zero3(tiny_model_dir, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ranks = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                  "--master_port", str(port), SCRIPT, tiny_model_dir, str(tmp_path), "--checks", "sync"],
                 tmp_path, nproc=2)
    for r in ranks:
        assert r["world"] == 2
        _check_sync(r)
        # ZeRO-3 held about half of each tensor per rank, so the sync had to gather.
        assert r["local_elements"] <= r["full_elements"] // 2 + 64
    # Each rank generated for its own share of the prompts.
    assert ranks[0]["completions"][0]["tokens"] != ranks[1]["completions"][0]["tokens"]
