"""Shared fixtures: the tiny offline model is built once per test session, per architecture."""
from __future__ import annotations

import pytest

@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory):
    """Returns build(arch="qwen2_vl", seed=0) -> checkpoint dir, cached per (arch, seed)."""
    from dprl.config import TinyModelConfig
    from dprl.models.tiny import make_tiny_model

    cache: dict = {}

    def build(arch: str = "qwen2_vl", seed: int = 0) -> str:
        if (arch, seed) not in cache:
            out = tmp_path_factory.mktemp(f"tiny-{arch}-{seed}")
            cache[(arch, seed)] = make_tiny_model(str(out), TinyModelConfig(arch=arch, seed=seed))
        return cache[(arch, seed)]

    return build


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model_factory):
    return tiny_model_factory("qwen2_vl")
