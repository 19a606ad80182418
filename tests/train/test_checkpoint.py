"""Checkpoints on a one-layer DeepSpeed engine: non-finite weights are never written, and the
state pointer always names a save that exists."""
import json
import os

import pytest
import torch

from dprl.config import TrainerConfig


@pytest.fixture
def ds_engine():
    from dprl.train.engine import build_deepspeed_engine, init_distributed

    cfg = TrainerConfig(zero_stage=0, dtype="float32", micro_batch_size=1, total_steps=2)
    init_distributed(cfg)
    torch.manual_seed(0)
    ds_engine, _, _ = build_deepspeed_engine(torch.nn.Linear(4, 4), cfg)
    return ds_engine


def _tags(run_dir):
    return sorted(d for d in os.listdir(run_dir / "state") if d.startswith("step"))


def _pointer(run_dir):
    with open(run_dir / "state" / "trainer.json") as fh:
        return json.load(fh)


def test_non_finite_weights_are_never_saved_or_exported(tmp_path, ds_engine):
    from dprl.train.checkpoint import save_hf, save_state
    from dprl.train.finite import NonFiniteError

    save_state(ds_engine, str(tmp_path), 1)
    with torch.no_grad():
        ds_engine.module.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"at step 2: 1 of 2 weight tensors hold nan or inf \(e.g. weight\)"
                                             r".*last good state \(step 1\)"):
        save_state(ds_engine, str(tmp_path), 2)
    assert _tags(tmp_path) == ["step00000001"] and _pointer(tmp_path)["step"] == 1
    with pytest.raises(NonFiniteError, match="at step 2: "):
        save_hf(ds_engine, None, str(tmp_path / "final"), step=2)  # fails before the processor is used
    assert not (tmp_path / "final").exists()


def test_a_save_never_deletes_itself_or_a_later_one(tmp_path, ds_engine):
    from dprl.train.checkpoint import save_state, saved_step

    save_state(ds_engine, str(tmp_path), 4)
    save_state(ds_engine, str(tmp_path), 2)  # older than what is there: keep=1 must not prune it
    assert _tags(tmp_path) == ["step00000002", "step00000004"]
    assert saved_step(str(tmp_path))["tag"] == "step00000002"
    save_state(ds_engine, str(tmp_path), 5)
    assert _tags(tmp_path) == ["step00000005"]


def test_a_pointer_to_a_missing_save_fails_clearly(tmp_path, ds_engine):
    from dprl.train.checkpoint import RunStateError, load_state, save_state

    save_state(ds_engine, str(tmp_path), 3)
    os.rename(tmp_path / "state" / "step00000003", tmp_path / "moved")
    with pytest.raises(RunStateError, match=r"trainer.json says the last save is step 3 .*state/step00000003 "
                                            r"is missing.*new output_dir"):
        load_state(ds_engine, str(tmp_path))
    (tmp_path / "state" / "trainer.json").write_text("{not json")
    with pytest.raises(RunStateError, match="trainer.json is not a valid pointer"):
        load_state(ds_engine, str(tmp_path))
