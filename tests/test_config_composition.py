"""`base: FILE` composition, and the config package's place at the bottom of the import graph."""
import ast
import os

import pytest

from dprl.config import ConfigError, PipelineConfig, SmokeConfig, load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_section_overlays_its_base_file(tmp_path):
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "rollout.yaml").write_text("n: 3\ntemperature: 0.5\nstop: [x, y]\n")
    (tmp_path / "smoke.yaml").write_text(
        "num_prompts: 5\nrollout:\n  base: stages/rollout.yaml\n  temperature: 0.7\n  stop: [z]\n")
    cfg = load_config(SmokeConfig, str(tmp_path / "smoke.yaml"))
    assert cfg.rollout.n == 3  # from the base, found relative to the file that names it
    assert cfg.rollout.temperature == 0.7  # the section's own key wins
    assert cfg.rollout.stop == ["z"]  # a list replaces the base's, it is not appended to
    assert cfg.num_prompts == 5


def test_bases_chain_and_overrides_still_win(tmp_path):
    (tmp_path / "a.yaml").write_text("rollout: {n: 2, max_tokens: 9}\natol: 0.5\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nrollout: {n: 6}\n")
    (tmp_path / "c.yaml").write_text("base: b.yaml\nnum_prompts: 4\n")
    cfg = load_config(SmokeConfig, str(tmp_path / "c.yaml"), ["rollout.max_tokens=11"])
    assert (cfg.rollout.n, cfg.rollout.max_tokens, cfg.atol, cfg.num_prompts) == (6, 11, 0.5, 4)


def test_a_base_that_loops_or_is_missing_fails_naming_the_key(tmp_path):
    (tmp_path / "a.yaml").write_text("rollout: {base: b.yaml}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"^rollout\.base: .*already being loaded"):
        load_config(SmokeConfig, str(tmp_path / "a.yaml"))
    (tmp_path / "c.yaml").write_text("model: {base: nowhere.yaml}\n")
    with pytest.raises(ConfigError, match=r"^model\.base: config file .*nowhere\.yaml.* does not exist"):
        load_config(SmokeConfig, str(tmp_path / "c.yaml"))
    (tmp_path / "d.yaml").write_text("model: {base: 3}\n")
    with pytest.raises(ConfigError, match=r"^model\.base: expected the path of a YAML file"):
        load_config(SmokeConfig, str(tmp_path / "d.yaml"))
    # An unknown key inside a base file is still named by its full dotted key.
    (tmp_path / "e.yaml").write_text("n: 2\ntemprature: 1\n")
    (tmp_path / "f.yaml").write_text("rollout: {base: e.yaml}\n")
    with pytest.raises(ConfigError, match=r"^rollout\.temprature: unknown key"):
        load_config(SmokeConfig, str(tmp_path / "f.yaml"))


def test_the_main_job_is_the_shipped_stage_configs():
    from dprl.config import EvalConfig, GRPOConfig, SFTConfig, WorldConfig

    root = os.path.join(REPO, "configs")
    pipeline = load_config(PipelineConfig, os.path.join(root, "pipeline_tiny.yaml"))
    for name, cls in (("world", WorldConfig), ("sft", SFTConfig), ("grpo", GRPOConfig)):
        assert getattr(pipeline, name) == load_config(cls, os.path.join(root, f"{name}_tiny.yaml")), name
    alone = load_config(EvalConfig, os.path.join(root, "eval_tiny.yaml"))
    assert pipeline.eval.rollout.temperature == alone.rollout.temperature == 0.0
    assert (pipeline.eval.data.max_per_domain, alone.data.max_per_domain) == (100, 20)


def test_no_section_field_is_named_base():
    """`base` is the composition key, so no config field may take that name."""
    import dataclasses

    import dprl.config as config

    for name in config.__all__:
        obj = getattr(config, name)
        if dataclasses.is_dataclass(obj):
            assert "base" not in {f.name for f in dataclasses.fields(obj)}, name


def test_config_imports_nothing_else_from_dprl():
    """The arrows run one way: every part of dprl may import the config, never the reverse."""
    folder = os.path.join(REPO, "dprl", "config")
    for file in sorted(os.listdir(folder)):
        if not file.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(folder, file)).read())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for mod in names:
                assert not mod.startswith("dprl") or mod.startswith("dprl.config"), (file, mod)
                # The generic loader imports no section either: they all import it.
                assert not (file == "loader.py" and mod.startswith("dprl")), mod
