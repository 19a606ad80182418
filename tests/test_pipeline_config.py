"""How the pipeline wires its stages together (no stage is run here)."""
import os

from dprl.config import PipelineConfig, load_config
from dprl.pipeline import stage_configs


def test_stage_paths_link_the_stages(tmp_path):
    cfg = load_config(PipelineConfig, "configs/pipeline_tiny.yaml", [f"output_dir={tmp_path}"])
    s = stage_configs(cfg)
    world = s["world"].output_dir
    assert s["sft"].data.train_path == os.path.join(world, "kvg_train.jsonl")
    assert s["sft"].data.knowledge_path == os.path.join(world, "knowledge_corpus.jsonl")
    assert s["grpo"].model.path == os.path.join(s["sft"].output_dir, "final")
    assert s["grpo"].data.path == os.path.join(world, "kvg_train.jsonl")
    assert s["eval"].data.path == os.path.join(world, "kvg_test.jsonl")
    assert s["eval"].probe.path == os.path.join(world, "knowledge_base.jsonl")
    no_probe = stage_configs(load_config(PipelineConfig, "configs/pipeline_tiny.yaml",
                                         [f"output_dir={tmp_path}", "eval.probe.path="]))
    assert no_probe["eval"].probe.path == ""
    assert [c.name for c in s["eval"].checkpoints] == ["untrained", "cot-sft", "cot-sft+grpo"]
    # The stage settings of the YAML survive the wiring.
    assert s["sft"].trainer.lr == cfg.sft.trainer.lr and s["grpo"].steps == cfg.grpo.steps


def test_only_models_that_exist_or_will_be_made_are_evaluated(tmp_path):
    cfg = load_config(PipelineConfig, "configs/pipeline_tiny.yaml",
                      [f"output_dir={tmp_path}", "stages=[world, sft, eval]"])
    assert [c.name for c in stage_configs(cfg)["eval"].checkpoints] == ["untrained", "cot-sft"]
    os.makedirs(tmp_path / "grpo" / "final")  # made by an earlier run
    assert [c.name for c in stage_configs(cfg)["eval"].checkpoints][-1] == "cot-sft+grpo"
