"""Config loading: strict types, unknown keys and impossible values fail naming the key."""
import pytest
import yaml

from dprl.config import ConfigError, RolloutConfig, SmokeConfig, load_config, parse_override, save_config


def test_defaults_load_and_validate():
    cfg = load_config(SmokeConfig)
    assert cfg.rollout.n == 4 and cfg.model.dtype == "float32"


def test_yaml_and_overrides_apply_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rollout:\n  n: 2\n  temperature: 0.5\nnum_prompts: 3\n")
    cfg = load_config(SmokeConfig, str(path), ["rollout.n=8", "atol=1e-3", "model.tiny.arch=qwen2_5_vl"])
    assert cfg.rollout.n == 8  # override beats the file
    assert cfg.rollout.temperature == 0.5  # file beats the default
    assert cfg.num_prompts == 3
    assert cfg.atol == pytest.approx(1e-3)  # YAML would read "1e-3" as a string
    assert cfg.model.tiny.arch == "qwen2_5_vl"


@pytest.mark.parametrize("text, expected", [
    ("a.b=1", (["a", "b"], 1)), ("x=1e-6", (["x"], 1e-6)), ("x=true", (["x"], True)),
    ("x=[1, 2]", (["x"], [1, 2])), ("x=hello", (["x"], "hello")), ("x=", (["x"], "")),
])
def test_parse_override(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize("override, key, expected", [
    (["rollout.temprature=0.5"], "rollout.temprature", "unknown key"),
    (["nope=1"], "nope", "unknown key"),
    (["rollout.n=four"], "rollout.n", "an integer"),
    (["rollout.n=2.5"], "rollout.n", "an integer"),
    (["rollout.n=true"], "rollout.n", "an integer"),
    (["rollout.temperature=hot"], "rollout.temperature", "a number"),
    (["model.dtype=float64"], "model.dtype", "one of"),
    (["model.tiny.arch=llama"], "model.tiny.arch", "one of"),
    (["rollout.n=0"], "rollout.n", "at least 1"),
    (["rollout.temperature=0"], "rollout.temperature", "positive"),
    (["rollout.top_p=1.5"], "rollout.top_p", "(0, 1]"),
    (["rollout.max_model_len=16", "rollout.max_tokens=32"], "rollout.max_model_len", "more than"),
    (["model.tiny.hidden_size=130"], "model.tiny.hidden_size", "multiple of num_heads"),
    (["model.tiny.num_kv_heads=3"], "model.tiny.num_kv_heads", "divisor"),
    (["model.path=/definitely/not/here"], "model.path", "existing local checkpoint"),
    (["model.dtype=bfloat16"], "atol", "at least 1e-3"),
    (["rollout=3"], "rollout", "a mapping"),
])
def test_bad_values_fail_naming_the_key(override, key, expected):
    with pytest.raises(ConfigError) as err:
        load_config(SmokeConfig, None, override)
    msg = str(err.value)
    assert msg.startswith(key + ":"), msg
    assert expected in msg, msg


@pytest.mark.parametrize("override", ["rollout.top_p=0.9", "rollout.top_k=40"])
def test_grpo_refuses_a_truncated_sampler(override):
    from dprl.config import GRPOConfig

    with pytest.raises(ConfigError, match=r"^rollout\.top_[pk]: .*full softmax"):
        load_config(GRPOConfig, None, [override])


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match="valid keys are: .*max_tokens"):
        load_config(RolloutConfig, None, ["max_token=3"])


def test_bad_files_fail_clearly(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(SmokeConfig, str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(SmokeConfig, str(bad))
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(SmokeConfig, None, ["rollout.n"])
    with pytest.raises(ConfigError, match="is not a section"):
        load_config(SmokeConfig, None, ["atol=1", "atol.x=1"])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(SmokeConfig, None, ["rollout.n=3", "output_dir=somewhere"])
    path = save_config(cfg, str(tmp_path))
    data = yaml.safe_load(open(path))
    assert data["rollout"]["n"] == 3 and data["model"]["tiny"]["hidden_size"] == cfg.model.tiny.hidden_size
    assert load_config(SmokeConfig, path) == cfg


def test_tiny_head_size_must_suit_vllm_cpu_attention():
    with pytest.raises(ConfigError, match=r"model.tiny.hidden_size: .*vLLM's CPU attention.*that is 16"):
        load_config(SmokeConfig, None, ["model.tiny.hidden_size=64"])
    assert load_config(SmokeConfig, None, ["model.tiny.hidden_size=256"]).model.tiny.hidden_size == 256


def test_a_partial_section_keeps_the_defaults_its_parent_chose():
    from dataclasses import dataclass, field

    from dprl.config import RolloutConfig

    @dataclass
    class Stage:
        rollout: RolloutConfig = field(default_factory=lambda: RolloutConfig(n=8, temperature=0.5))

    cfg = load_config(Stage, None, ["rollout.max_tokens=7"])
    assert (cfg.rollout.n, cfg.rollout.temperature, cfg.rollout.max_tokens) == (8, 0.5, 7)
    assert load_config(Stage).rollout.n == 8
    # The class default is still what a section without a parent default gets.
    assert load_config(SmokeConfig, None, ["rollout.max_tokens=7"]).rollout.n == RolloutConfig().n


@pytest.mark.parametrize("cls, override, key", [
    ("SFTConfig", "trainer.lr=inf", "trainer.lr"),  # YAML leaves inf as text
    ("SFTConfig", "trainer.lr=.inf", "trainer.lr"),  # YAML's own infinity passes `lr > 0`
    ("SFTConfig", "trainer.lr=1e999", "trainer.lr"),  # overflows to inf when parsed
    ("SFTConfig", "trainer.grad_clip=.nan", "trainer.grad_clip"),
    ("SFTConfig", "trainer.betas=[0.9, .nan]", "trainer.betas[1]"),
    ("GRPOConfig", "grpo.eps_high=.inf", "grpo.eps_high"),
    ("GRPOConfig", "reward.functions=[{name: iou, tau: .nan}]", "reward.functions[0].tau"),
])
def test_non_finite_numbers_fail_at_load_naming_the_key(cls, override, key):
    import dprl.config

    with pytest.raises(ConfigError) as err:
        load_config(getattr(dprl.config, cls), None, [override])
    msg = str(err.value)
    assert msg.startswith(key + ":") and "finite" in msg, msg
