"""What a rerun of `dprl pipeline` reuses: finished stages made with the same settings from the
same inputs; anything else stops the pipeline before any work, naming what changed.

The stages are stubs (a script standing in for `python -m dprl.cli <stage>` that writes each
stage's final product), so no model is trained here."""
import json
import os
import shutil
import stat
import sys

import pytest
import yaml

from dprl.config import PipelineConfig, load_config
from dprl.pipeline import run_pipeline

STUB = """
import os, sys, yaml
stage, path = sys.argv[3], sys.argv[5]  # -m dprl.cli <stage> --config <path>
out = yaml.safe_load(open(path))["output_dir"]
with open(os.path.join(os.path.dirname(path), "stages_run.txt"), "a") as fh:
    fh.write(stage + "\\n")
if os.environ.get("STUB_INTERRUPT") == stage:  # stopped after its first save
    os.makedirs(os.path.join(out, "state"), exist_ok=True)
    open(os.path.join(out, "state", "trainer.json"), "w").write('{"step": 1, "tag": "step1"}')
    sys.exit(1)
product = {"world": "world.json", "sft": "final/model.safetensors",
           "grpo": "final/model.safetensors"}.get(stage)
if product:
    os.makedirs(os.path.dirname(os.path.join(out, product)), exist_ok=True)
    open(os.path.join(out, product), "w").write("made")
"""


@pytest.fixture
def stub_stages(tmp_path, monkeypatch):
    """Stage processes are the stub: the pipeline starts stages with sys.executable."""
    script = tmp_path / "stub_python"
    script.write_text(f"#!{sys.executable}\n{STUB}")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(sys, "executable", str(script))


def _run(run_dir, *overrides):
    cfg = load_config(PipelineConfig, "configs/pipeline_tiny.yaml", [f"output_dir={run_dir}", *overrides])
    return run_pipeline(cfg)


def _stages_run(run_dir) -> list[str]:
    """The stages started since the last call."""
    path = run_dir / "stages_run.txt"
    if not path.exists():
        return []
    stages = path.read_text().split()
    path.unlink()
    return stages


def test_a_rerun_reuses_finished_stages(tmp_path, stub_stages):
    run = tmp_path / "run"
    _run(run)
    assert _stages_run(run) == ["world", "sft", "grpo", "eval"]
    _run(run)
    assert _stages_run(run) == ["eval"]  # eval is resumable by itself and always runs
    # Settings that only change logging, checkpointing or parallelism keep what was made.
    _run(run, "sft.log_every=5", "world.workers=2", "grpo.save_every=3")
    assert _stages_run(run) == ["eval"]


def test_changed_settings_are_refused_before_any_work(tmp_path, stub_stages):
    run = tmp_path / "run"
    _run(run)
    _stages_run(run)
    with pytest.raises(RuntimeError) as err:
        _run(run, "world.seed=7")
    msg = str(err.value)
    assert "world.seed: 0 -> 7" in msg
    assert "sft (finished" in msg and "grpo (finished" in msg and "made from world" in msg
    assert "new output_dir" in msg and str(run / "world") in msg  # how to go on
    assert _stages_run(run) == []
    # The run's config.yaml still says what made the outputs.
    assert yaml.safe_load(open(run / "config.yaml"))["world"]["seed"] == 0

    with pytest.raises(RuntimeError, match=r"grpo.trainer.lr: 0.0002 -> 0.0003"):
        _run(run, "grpo.trainer.lr=3e-4", "stages=[eval]")  # a stage left out still speaks


def test_only_the_changed_stage_and_those_after_it_are_named(tmp_path, stub_stages):
    run = tmp_path / "run"
    _run(run)
    with pytest.raises(RuntimeError) as err:
        _run(run, "grpo.trainer.lr=3e-4")
    msg = str(err.value)
    assert "grpo (finished" in msg and "world (" not in msg and "sft (" not in msg


def test_a_remade_input_invalidates_what_was_made_from_it(tmp_path, stub_stages):
    run = tmp_path / "run"
    _run(run)
    _stages_run(run)
    shutil.rmtree(run / "world")
    with pytest.raises(RuntimeError, match="made from world, which is to be made again"):
        _run(run)
    assert _stages_run(run) == []
    # Made again behind the pipeline's back (`dprl world` by hand): sft and grpo came from the old one.
    _run(tmp_path / "other", "stages=[world]")
    shutil.copytree(tmp_path / "other" / "world", run / "world")
    with pytest.raises(RuntimeError, match="made from world, which was made again or removed since"):
        _run(run)
    shutil.rmtree(run / "sft")
    shutil.rmtree(run / "grpo")
    _stages_run(run)
    _run(run)
    assert _stages_run(run) == ["sft", "grpo", "eval"]


def test_runs_made_before_stage_records_are_reused_only_with_the_same_settings(tmp_path, stub_stages):
    run = tmp_path / "run"
    _run(run)
    records = [run / s / "stage_done.json" for s in ("world", "sft", "grpo")]
    for r in records:
        r.unlink()  # as a run made before records were kept
    _stages_run(run)
    _run(run)  # each stage's yaml equals the new settings: adopted
    assert _stages_run(run) == ["eval"]
    assert all(r.is_file() for r in records)
    for r in records:
        r.unlink()
    with pytest.raises(RuntimeError, match=r"sft.trainer.lr: 0.002 -> 0.001"):
        _run(run, "sft.trainer.lr=1e-3")
    (run / "sft.yaml").unlink()
    with pytest.raises(RuntimeError, match=r"no record of the settings it was made with \(sft.yaml"):
        _run(run)


def test_a_resumable_state_is_not_continued_with_other_settings(tmp_path, stub_stages, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setenv("STUB_INTERRUPT", "sft")
    with pytest.raises(RuntimeError, match="stage sft failed"):
        _run(run)
    _stages_run(run)
    with pytest.raises(RuntimeError) as err:
        _run(run, "sft.trainer.lr=1e-3")
    assert "sft (a resumable state" in str(err.value) and "sft.trainer.lr: 0.002 -> 0.001" in str(err.value)
    assert _stages_run(run) == []
    # Starting it afresh may use other settings ...
    with pytest.raises(RuntimeError, match="stage sft failed"):
        _run(run, "sft.trainer.lr=1e-3", "sft.resume=false")
    assert _stages_run(run) == ["sft"]
    # ... and splitting a long run into chunks is no change of settings.
    monkeypatch.delenv("STUB_INTERRUPT")
    _run(run, "sft.trainer.lr=1e-3", "sft.stop_after=10")
    assert _stages_run(run) == ["sft", "grpo", "eval"]


def test_a_moved_run_directory_is_still_reused(tmp_path, stub_stages):
    _run(tmp_path / "run")
    shutil.move(tmp_path / "run", tmp_path / "moved")
    moved = tmp_path / "moved"
    _stages_run(moved)
    _run(moved)
    assert _stages_run(moved) == ["eval"]
    record = json.load(open(moved / "sft" / "stage_done.json"))
    assert record["config"]["data"]["train_path"] == os.path.join("$output_dir", "world", "kvg_train.jsonl")
