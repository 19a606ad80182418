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


@pytest.fixture(scope="session")
def small_world(tmp_path_factory):
    """A small synthetic world (few samples per domain, one process): its directory."""
    from dprl.config import WorldConfig
    from dprl.data.world import generate_world

    out = tmp_path_factory.mktemp("world")
    cfg = WorldConfig(output_dir=str(out), train_per_domain=6, val_per_domain=2, test_per_domain=3,
                      fgvr_train_per_domain=2, fgvr_test_per_domain=2, workers=1)
    generate_world(cfg, progress=False)
    return str(out)
