"""Non-finite checks agree over ranks (one rank raising alone would hang the others)."""
import json
import os
import socket
import subprocess
import sys

from cli_runner import REPO, child_env

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_rank_reaches_the_same_verdict(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
         str(_free_port()), os.path.join(HERE, "finite_run.py"), str(tmp_path)],
        cwd=REPO, env=child_env(OMP_NUM_THREADS="1", PYTHONPATH=REPO), capture_output=True, text=True,
        timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    clean, dirty = (json.load(open(tmp_path / f"rank{r}.json")) for r in (0, 1))
    assert dirty["values"] == "loss is nan" and dirty["weights"] == "1 of 2 weight tensors hold nan or inf (e.g. bias)"
    assert clean["values"] and clean["weights"]  # rank 0's own numbers are all finite
    assert clean["clean"] == dirty["clean"] == ""
