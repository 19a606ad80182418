"""The metrics logger's outputs: JSONL rows, and Weights & Biases when asked for. wandb is not a
dependency, so a recording stand-in takes its place here; a real offline run is checked when
wandb happens to be installed."""
import json
import os
import sys
import types

import pytest

from dprl.config import ConfigError, GRPOConfig, LogConfig, SFTConfig, load_config
from dprl.train.metrics import MetricsLogger


class _FakeRun:
    def __init__(self, calls, kwargs):
        self.calls, self.kwargs = calls, kwargs

    def log(self, values, step):
        self.calls.append(("log", step, dict(values)))

    def finish(self):
        self.calls.append(("finish",))


@pytest.fixture
def fake_wandb(monkeypatch):
    calls = []
    mod = types.ModuleType("wandb")

    def init(**kwargs):
        calls.append(("init", kwargs))
        return _FakeRun(calls, kwargs)

    mod.init = init
    monkeypatch.setitem(sys.modules, "wandb", mod)
    return calls


def _wandb_cfg(**kw):
    return LogConfig(wandb=True, **kw)


def test_rows_reach_jsonl_and_wandb_with_the_step(tmp_path, fake_wandb):
    out = str(tmp_path / "run")
    log = MetricsLogger(out, 3, log_cfg=_wandb_cfg(wandb_tags=["tiny"]), run_config={"lr": 0.1})
    log.log(1, {"train/loss": 0.5, "note": "text is JSONL only"})
    log.log(2, {"train/loss": 0.25})
    log.close()
    init = fake_wandb[0][1]
    assert init["project"] == "dprl" and init["name"] == "run" and init["tags"] == ["tiny"]
    assert init["id"] == open(os.path.join(out, "wandb_run_id")).read().strip()
    assert init["resume"] == "allow" and init["dir"] == out
    assert init["config"] == {"lr": 0.1}
    assert fake_wandb[1:] == [("log", 1, {"train/loss": 0.5}), ("log", 2, {"train/loss": 0.25}), ("finish",)]
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [1, 2] and rows[0]["note"] == "text is JSONL only"


def test_a_resumed_run_continues_the_same_wandb_run_and_a_fresh_one_does_not(tmp_path, fake_wandb):
    out = str(tmp_path / "run")
    MetricsLogger(out, 4, log_cfg=_wandb_cfg(wandb_name="mine")).close()
    MetricsLogger(out, 4, start_step=2, log_cfg=_wandb_cfg()).close()  # resumed from step 2
    MetricsLogger(out, 4, start_step=0, log_cfg=_wandb_cfg()).close()  # started over
    ids = [c[1]["id"] for c in fake_wandb if c[0] == "init"]
    assert ids[0] == ids[1] != ids[2] and len(ids[0]) == 8
    assert [c[1]["name"] for c in fake_wandb if c[0] == "init"] == ["mine", "run", "run"]


def test_off_by_default_and_never_on_other_ranks(tmp_path, fake_wandb):
    MetricsLogger(str(tmp_path / "a"), 2).close()
    MetricsLogger(str(tmp_path / "b"), 2, enabled=False, log_cfg=_wandb_cfg()).close()
    assert fake_wandb == []


@pytest.mark.parametrize("cls", [GRPOConfig, SFTConfig])
def test_asking_for_wandb_without_it_fails_before_any_work(cls, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"log\.wandb: expected false, or the wandb package installed"):
        load_config(cls, None, ["log.wandb=true"])
    assert load_config(cls, None, ["log.wandb=false"]).log.wandb is False


def test_a_real_offline_wandb_run(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = str(tmp_path / "run")
    log = MetricsLogger(out, 2, log_cfg=_wandb_cfg(), run_config={"lr": 0.1})
    log.log(1, {"train/loss": 0.5})
    log.close()
    run_id = open(os.path.join(out, "wandb_run_id")).read().strip()
    assert any(run_id in d for d in os.listdir(os.path.join(out, "wandb"))), wandb.__version__
