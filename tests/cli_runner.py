"""Runs the dprl command line in a fresh process, as a user would."""
from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs `python -m dprl.cli ARGS` in a fresh process (vLLM gets a clean process each time)."""
    return subprocess.run([sys.executable, "-m", "dprl.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
