"""Shared fixtures: the tiny offline model is built once per test session, per architecture."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs `python -m dprl.cli ARGS` in a fresh process (vLLM gets a clean process each time)."""
    return subprocess.run([sys.executable, "-m", "dprl.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
