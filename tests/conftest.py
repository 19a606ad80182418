"""Shared fixtures: the tiny offline model is built once per test session, per architecture.
Also the options of the benchmark suite in tests/bench (pytest reads options only from the
conftest files it loads first, this one among them)."""
from __future__ import annotations

from pathlib import Path

import pytest


def pytest_addoption(parser):
    parser.addoption("--bench-full", action="store_true", default=False,
                     help="tests/bench: time larger shapes with more rounds (default: a fast CPU subset)")


def pytest_configure(config):
    # pytest-benchmark opens --benchmark-json only after the last test and does not create its
    # folder: a missing runs/bench/ would fail the run at the very end.
    json_path = config.getoption("benchmark_json", None)
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)


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
