"""Every stage's `model.path` -> checkpoint directory: the path given, or the tiny model built once
per config into the stage's run directory."""
import hashlib
import os

from dprl.config import TinyModelConfig
from dprl.models.loading import resolve_checkpoint


def _digest(path):
    with open(os.path.join(path, "model.safetensors"), "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def test_a_given_path_is_used_as_it_is(tmp_path):
    assert resolve_checkpoint("~/somewhere", TinyModelConfig(), str(tmp_path)) == os.path.expanduser("~/somewhere")
    assert not os.listdir(tmp_path)  # nothing built


def test_the_tiny_model_is_built_once_per_config(tmp_path, tiny_model_factory):
    run = str(tmp_path / "run")
    path = resolve_checkpoint("", TinyModelConfig(seed=0), run)
    assert path == os.path.join(run, "tiny-model")
    assert _digest(path) == _digest(tiny_model_factory("qwen2_vl", 0))
    built = os.stat(os.path.join(path, "model.safetensors")).st_mtime_ns
    assert resolve_checkpoint("", TinyModelConfig(seed=0), run) == path
    assert os.stat(os.path.join(path, "model.safetensors")).st_mtime_ns == built  # reused, not rebuilt
    # Another config in the same folder is never used stale: it is built again.
    assert resolve_checkpoint("", TinyModelConfig(seed=1), run) == path
    assert _digest(path) == _digest(tiny_model_factory("qwen2_vl", 1))
