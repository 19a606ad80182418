"""Runs dprl in fresh processes, as a user would."""
from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A trainer built inside the test process sets these for its world of one; a child that
# inherited them would try to join that world's (busy) port instead of making its own.
_DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
              "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def child_env(**extra: str) -> dict:
    """os.environ without torch.distributed's launcher variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in _DIST_VARS}
    env.update(extra)
    return env


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs `python -m dprl.cli ARGS` in a fresh process (vLLM gets a clean process each time)."""
    return subprocess.run([sys.executable, "-m", "dprl.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=child_env())
