"""The CPU paths' memory beyond inputs and returned gradients must not grow with V."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CHUNK_ELEMS = 1 << 18  # 1 MB of fp32 per row block
N, H = 64, 32
VOCAB = [8192, 65536, 262144]
MB = 1 << 20


@pytest.fixture(scope="module")
def extra_bytes():
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("peak-RSS reset (/proc/self/clear_refs) not available")
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0",
               OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    cfg = json.dumps({"chunk_elems": CHUNK_ELEMS, "n": N, "h": H, "vocab": VOCAB})
    res = subprocess.run([sys.executable, str(Path(__file__).with_name("peak_memory_probe.py")), cfg],
                         env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_probe_sees_naive_temporaries(extra_bytes):
    """Control: eager log_softmax keeps an N x V fp32 log-softmax (and its grad) alive; if the
    probe did not see those it could not catch a chunked path that regressed to them."""
    v = VOCAB[-1]
    assert extra_bytes[f"naive_{v}"] >= 4 * N * v


@pytest.mark.parametrize("op", ["selective", "linear"])
def test_cpu_path_extra_memory_is_bounded(op, extra_bytes):
    # Two fp32 row blocks live at once (_torch_rows), plus [N]-sized vectors and allocator slack.
    bound = 2 * 4 * CHUNK_ELEMS + 4 * MB
    sizes = [extra_bytes[f"{op}_{v}"] for v in VOCAB]
    assert max(sizes) <= bound, f"{op}: extra bytes {sizes} over {bound} for V = {VOCAB}"
    # At V = 262,144 one N x V fp32 tensor is 64 MB: growth with V would show far above this.
    assert sizes[-1] - sizes[0] <= 4 * MB, f"{op}: grows with V: {sizes}"
