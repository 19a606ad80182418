"""torchvision imports next to the CPU torch in every fresh interpreter (vLLM's subprocesses too)."""
import subprocess
import sys

import pytest
import torch


@pytest.mark.skipif(torch.version.cuda is not None, reason="the fix is for the CPU stack only")
def test_torchvision_imports_in_a_fresh_interpreter_without_dprl():
    # No `import dprl` here: this is how vLLM's model-inspection subprocess starts.
    code = "import torchvision, torch; from torchvision.transforms import functional; print(torch.ops.torchvision.nms)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


def test_define_missing_ops_is_idempotent():
    import torchvision  # noqa: F401  (armed by the .pth file / dprl import)
    from dprl._torchvision_compat import define_missing_ops

    assert define_missing_ops() == []  # already defined or loaded: nothing defined twice
