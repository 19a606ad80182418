"""The tiny offline model: standard HF layout, loads with transformers, deterministic, Qwen2-VL tokens."""
import hashlib
import os

import pytest
import torch

from dprl.config import ConfigError, TinyModelConfig
from dprl.models.loading import check_checkpoint_dir, load_model, load_processor
from dprl.models.tiny import count_parameters, make_tiny_model, mrope_section
from dprl.models.tokenizer import FORMAT_TOKENS, SPECIAL_TOKENS
from dprl.smoke import demo_image, demo_messages


def _digest(path):
    return hashlib.sha256(open(os.path.join(path, "model.safetensors"), "rb").read()).hexdigest()


@pytest.mark.parametrize("arch, model_cls, proc_cls", [
    ("qwen2_vl", "Qwen2VLForConditionalGeneration", "Qwen2VLProcessor"),
    ("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"),
])
def test_loads_with_transformers_and_runs_an_image_prompt(tiny_model_factory, arch, model_cls, proc_cls):
    path = tiny_model_factory(arch)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "processor_config.json", "chat_template.jinja"):
        assert os.path.isfile(os.path.join(path, name)), name
    assert check_checkpoint_dir(path)["model_type"] == arch
    model, processor = load_model(path), load_processor(path)
    assert type(model).__name__ == model_cls and type(processor).__name__ == proc_cls
    n = count_parameters(model)
    assert 5e5 <= n["total"] <= 2e6, n  # "around 1M" so CPU tests stay fast
    assert n["vision"] > 0 and n["language_model"] > 0

    text = processor.apply_chat_template(demo_messages(0), tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=[demo_image(0)], return_tensors="pt")
    n_image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    merged = int(inputs["image_grid_thw"].prod()) // 4  # 2x2 spatial merge
    assert n_image_tokens == merged > 1
    with torch.no_grad():
        logits = model(**inputs).logits  # (1, P, V)
    assert logits.shape[-1] == len(processor.tokenizer) and torch.isfinite(logits).all()


def test_deterministic_for_a_seed(tiny_model_factory, tmp_path):
    again = make_tiny_model(str(tmp_path / "again"), TinyModelConfig(seed=0))
    assert _digest(again) == _digest(tiny_model_factory("qwen2_vl", 0))
    assert _digest(tiny_model_factory("qwen2_vl", 1)) != _digest(again)
    tok_a = open(os.path.join(again, "tokenizer.json")).read()
    assert tok_a == open(os.path.join(tiny_model_factory("qwen2_vl", 0), "tokenizer.json")).read()


def test_tokenizer_has_qwen2_vl_tokens_and_round_trips(tiny_model_dir):
    tok = load_processor(tiny_model_dir).tokenizer
    vocab = tok.get_vocab()
    for t in SPECIAL_TOKENS + FORMAT_TOKENS:
        assert t in vocab, t
        assert tok.convert_ids_to_tokens(tok(t, add_special_tokens=False)["input_ids"]) == [t]
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    text = ("<think>The third candidate has 5 spots, so it is the Vexal.</think>"
            "<answer><|box_start|>(120,45),(987,1000)<|box_end|></answer>")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    # Digits are single tokens, as in Qwen2: "987" is three tokens.
    assert tok.convert_ids_to_tokens(tok("987", add_special_tokens=False)["input_ids"]) == ["9", "8", "7"]
    weird = "naïve 日本 \x00 emoji 🚀"
    assert tok.decode(tok(weird, add_special_tokens=False)["input_ids"]) == weird


def test_chat_template_matches_qwen2_vl_layout(tiny_model_dir):
    proc = load_processor(tiny_model_dir)
    text = proc.apply_chat_template(demo_messages(1), tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                           "<|vision_start|><|image_pad|><|vision_end|>Please locate <|object_ref_start|>")
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_mrope_section_fills_the_rotary_half():
    for head_dim in (32, 64, 80, 128, 256):
        sec = mrope_section(head_dim)
        assert sum(sec) == head_dim // 2 and min(sec) > 0
    assert mrope_section(128) == [16, 24, 24]  # Qwen2-VL-7B's own split


def test_rope_theta_reaches_the_checkpoint(tmp_path):
    import json

    out = make_tiny_model(str(tmp_path / "m"), TinyModelConfig(rope_theta=10.0))
    text = json.load(open(os.path.join(out, "config.json")))["text_config"]
    assert text["rope_parameters"]["rope_theta"] == 10.0
    with pytest.raises(ConfigError, match="rope_theta"):
        make_tiny_model(str(tmp_path / "bad"), TinyModelConfig(rope_theta=0.5))


def test_pixel_normalisation_reaches_the_processor(tmp_path):
    """The processor normalises with the configured statistics: a picture of the configured mean
    colour becomes all zeros, which is what keeps the world's pale background from dominating
    every visual token."""
    import numpy as np
    from PIL import Image

    mean, std = [0.5, 0.25, 0.75], [0.2, 0.1, 0.3]
    out = make_tiny_model(str(tmp_path / "m"), TinyModelConfig(image_mean=mean, image_std=std))
    proc = load_processor(out)
    flat = Image.fromarray((np.array(mean) * 255 * np.ones((56, 56, 3))).round().astype(np.uint8))
    pixels = proc.image_processor(images=[flat], return_tensors="pt")["pixel_values"]
    assert pixels.abs().max() < 0.03  # only the 8-bit rounding of the mean colour is left
    with pytest.raises(ConfigError, match="image_std"):
        make_tiny_model(str(tmp_path / "bad"), TinyModelConfig(image_std=[0.2, 0.0, 0.2]))
    with pytest.raises(ConfigError, match="image_mean"):
        make_tiny_model(str(tmp_path / "bad2"), TinyModelConfig(image_mean=[0.5, 0.5]))


def test_bad_sizes_fail_before_writing(tmp_path):
    with pytest.raises(ConfigError, match="num_kv_heads"):
        make_tiny_model(str(tmp_path / "m"), TinyModelConfig(num_kv_heads=3))
    assert not (tmp_path / "m").exists()


def test_missing_checkpoint_says_nothing_is_downloaded(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_model(str(tmp_path))
