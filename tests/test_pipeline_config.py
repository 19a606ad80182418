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


def test_the_data_engine_stage_feeds_grpo_from_the_sft_checkpoint(tmp_path):
    cfg = load_config(PipelineConfig, "configs/pipeline_tiny.yaml",
                      [f"output_dir={tmp_path}", "stages=[world, sft, data_engine, grpo, eval]",
                       "data_engine.knowledge.kind=look"])
    s = stage_configs(cfg)
    engine, world, sft_final = s["data_engine"], s["world"].output_dir, os.path.join(s["sft"].output_dir, "final")
    assert engine.output_dir == os.path.join(str(tmp_path), "data_engine")
    assert engine.model.path == sft_final and engine.needs_model
    # Its sources: the world's seen domains as image folders it writes before the stage starts.
    assert [(src.kind, src.domain) for src in engine.data.sources] == [
        ("image_folder", d) for d in cfg.world.seen_domains]
    assert all(src.path.startswith(engine.output_dir) for src in engine.data.sources)
    assert engine.knowledge.knowledge_path == os.path.join(world, "knowledge_base.jsonl")
    assert s["grpo"].data.path == os.path.join(engine.output_dir, "kvg_rl.jsonl")
    # Without the stage GRPO reads the world's prompts, and the stage's section is not checked
    # for a model (the pipeline sets it).
    plain = stage_configs(load_config(PipelineConfig, "configs/pipeline_tiny.yaml", [f"output_dir={tmp_path}"]))
    assert plain["grpo"].data.path == os.path.join(world, "kvg_train.jsonl")


def test_grpo_reads_the_data_engine_only_when_it_is_a_stage(tmp_path):
    from dprl.pipeline import upstream

    with_engine = load_config(PipelineConfig, None, [f"output_dir={tmp_path}",
                                                      "stages=[world, sft, data_engine, grpo, eval]"])
    assert upstream("grpo", with_engine) == ("world", "sft", "data_engine")
    assert upstream("grpo", load_config(PipelineConfig, None, [f"output_dir={tmp_path}"])) == ("world", "sft")
