"""The command line: only working commands are listed, and bad configs fail before any work."""
import os

import pytest

from cli_runner import run_cli
from dprl.cli import build_parser, main


def test_help_lists_exactly_the_working_commands():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert sorted(sub.choices) == ["data-engine", "eval", "grpo", "make-tiny-model", "pipeline", "sft", "smoke",
                                   "world"]
    out = run_cli("--help")
    assert out.returncode == 0
    for name in sub.choices:
        assert name in out.stdout


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage: dprl" in capsys.readouterr().out


def test_bad_config_fails_before_any_work(tmp_path, capsys):
    out_dir = tmp_path / "run"
    code = main(["smoke", "--config", "configs/smoke_tiny.yaml", f"output_dir={out_dir}", "rollout.tempreature=1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "rollout.tempreature: unknown key" in err and "temperature" in err
    assert not out_dir.exists()  # nothing was started


def test_shipped_configs_are_valid(tmp_path):
    from dprl.config import GRPOConfig, PipelineConfig, SFTConfig, SmokeConfig, load_config

    root = os.path.join(os.path.dirname(__file__), "..", "configs")
    assert load_config(SmokeConfig, os.path.join(root, "smoke_tiny.yaml")).rollout.n >= 2
    tiny = load_config(SFTConfig, os.path.join(root, "sft_tiny.yaml"))
    assert tiny.data.knowledge_per_batch >= 1
    # The main job's stages are the shipped stage configs (composed with `base:`).
    pipeline = load_config(PipelineConfig, os.path.join(root, "pipeline_tiny.yaml"))
    assert pipeline.sft.epochs == tiny.epochs and pipeline.eval.probe.path
    assert load_config(GRPOConfig, os.path.join(root, "grpo_tiny.yaml")).steps == pipeline.grpo.steps
    # The 7B config names a checkpoint directory that only exists where it was downloaded.
    (tmp_path / "config.json").write_text("{}")
    real = load_config(SFTConfig, os.path.join(root, "sft_qwen2vl_7b.yaml"), [f"model.path={tmp_path}"])
    t = real.trainer
    assert (t.zero_stage, t.dtype, t.lr, real.epochs) == (3, "bfloat16", 5e-6, 1)
    assert real.freeze_vision_tower and real.freeze_projector and t.freeze_vision


def test_make_tiny_model_command(tmp_path):
    out = run_cli("make-tiny-model", str(tmp_path / "m"), "--arch", "qwen2_5_vl", "--seed", "3", "num_layers=1")
    assert out.returncode == 0, out.stderr
    import json

    cfg = json.load(open(tmp_path / "m" / "config.json"))
    assert cfg["model_type"] == "qwen2_5_vl" and cfg["text_config"]["num_hidden_layers"] == 1


def test_make_tiny_model_rejects_bad_knobs(tmp_path, capsys):
    assert main(["make-tiny-model", str(tmp_path / "m"), "hidden_sise=64"]) == 2
    assert "hidden_sise: unknown key" in capsys.readouterr().err


def test_ctrl_c_stops_with_one_line_that_says_how_to_resume(tmp_path, capsys, monkeypatch):
    import dprl.cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(dprl.cli, "_cmd_world", interrupted)
    try:
        code = main(["world", "--config", "configs/world_tiny.yaml", f"output_dir={tmp_path}"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C left main as a KeyboardInterrupt (a traceback for the user)")
    assert code == 130
    assert capsys.readouterr().err == "dprl world: interrupted; run the same command again to resume\n"


def test_a_command_holds_its_output_dir_while_it_runs(tmp_path, capsys, monkeypatch):
    import dprl.data.world
    from dprl.run_dir import lock_run_dir

    world = ["world", "--config", "configs/world_tiny.yaml", f"output_dir={tmp_path}"]
    held = lock_run_dir(str(tmp_path))  # another run in the same directory
    assert main(world) == 1
    assert f"in use by another run (pid {os.getpid()}" in capsys.readouterr().err
    held.close()
    made = []
    monkeypatch.setattr(dprl.data.world, "generate_world", lambda cfg: made.append(cfg.output_dir))
    monkeypatch.setattr(dprl.data.world, "print_summary", lambda summary, out: None)
    assert main(world) == 0 and made == [str(tmp_path)]
    lock_run_dir(str(tmp_path)).close()  # released when the command returned
