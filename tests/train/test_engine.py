"""The shared DeepSpeed engine builder: schedule, config, freezing, and real steps."""
import json
import math
import os
import subprocess
import sys

import pytest

from dprl.config import ConfigError, TrainerConfig, WeightSyncConfig, load_config
from dprl.train.engine import deepspeed_config, is_vision_param, lr_multiplier

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def test_cosine_with_warmup_by_hand():
    cfg = TrainerConfig(warmup_steps=4, total_steps=14, min_lr_ratio=0.1)
    assert [lr_multiplier(s, cfg) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_multiplier(4, cfg) == pytest.approx(1.0)
    assert lr_multiplier(9, cfg) == pytest.approx(0.1 + 0.9 * 0.5)  # half way down the cosine
    assert lr_multiplier(14, cfg) == pytest.approx(0.1)
    assert lr_multiplier(99, cfg) == pytest.approx(0.1)
    no_warmup = TrainerConfig(warmup_steps=0, total_steps=10)
    assert lr_multiplier(0, no_warmup) == 1.0
    assert lr_multiplier(5, no_warmup) == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))


def test_deepspeed_config_follows_the_section():
    ds = deepspeed_config(TrainerConfig(zero_stage=3, dtype="bfloat16", micro_batch_size=2,
                                        grad_accum_steps=4, grad_clip=0.7, param_persistence_threshold=0))
    assert ds["zero_optimization"] == {"stage": 3, "stage3_param_persistence_threshold": 0}
    assert ds["bf16"] == {"enabled": True}
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (2, 4)
    assert ds["gradient_clipping"] == 0.7
    assert deepspeed_config(TrainerConfig(zero_stage=1, dtype="float32"))["bf16"] == {"enabled": False}


def test_vision_names():
    assert is_vision_param("model.visual.blocks.0.attn.qkv.weight")
    assert is_vision_param("module.model.visual.merger.mlp.0.bias")
    assert not is_vision_param("model.language_model.layers.0.mlp.up_proj.weight")


@pytest.mark.parametrize("override, key", [
    ("zero_stage=4", "zero_stage"), ("warmup_steps=20", "warmup_steps"), ("betas=[0.9]", "betas"),
    ("grad_clip=-1", "grad_clip"), ("dtype=float16", "dtype"), ("lr=0", "lr"),
])
def test_bad_trainer_values_are_named(override, key):
    with pytest.raises(ConfigError, match=f"^{key}: expected"):
        load_config(TrainerConfig, None, [override, "total_steps=10"])


def test_bad_sync_and_rollout_values_are_named():
    with pytest.raises(ConfigError, match="^bucket_mb: expected"):
        load_config(WeightSyncConfig, None, ["bucket_mb=0"])
    from dprl.config import RolloutConfig

    with pytest.raises(ConfigError, match="^backend: expected"):
        load_config(RolloutConfig, None, ["backend=sglang"])


@pytest.mark.parametrize("stage, dtype", [(3, "float32"), (2, "bfloat16")])
def test_steps_schedule_and_frozen_vision(tmp_path, stage, dtype):
    out = tmp_path / "r.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, os.path.join(HERE, "engine_run.py"), str(out), str(stage), dtype],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.load(open(out))
    assert r["boundaries"] == [False, True] * 4  # accumulation over 2 micro-batches
    assert r["lrs"] == pytest.approx(r["expected_lrs"], rel=1e-6)  # warmup then cosine
    assert r["vision_requires_grad"] is False and r["trainable_params"] == 2  # LM weight + bias
    assert r["vision_changed"] == 0.0 and r["lm_changed"] > 1e-3
    assert r["module_dtype"] == {"float32": "torch.float32", "bfloat16": "torch.bfloat16"}[dtype]
    assert "shm" not in proc.stdout.lower() + proc.stderr.lower().replace("shm_comm", "")
