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
    """Both stacks: after `import torchvision` the nms/qnms schemas its fake registrations need
    exist (dprl defined them on the CPU build; torchvision's compiled ops on a CUDA one, where
    define_missing_ops returns [] without looking, so that call alone proves nothing there)."""
    pytest.importorskip("torchvision")  # armed by the .pth file / dprl import
    from dprl._torchvision_compat import _schema_exists, define_missing_ops

    assert _schema_exists("nms") and _schema_exists("qnms")
    assert define_missing_ops() == []  # already defined or loaded: nothing defined twice


@pytest.mark.skipif(torch.version.cuda is None and torch.version.hip is None,
                    reason="on the CPU build torchvision's compiled ops do not load")
def test_cuda_build_keeps_torchvision_own_nms():
    """On a CUDA build dprl must define nothing: a schema defined before torchvision loads its
    compiled library would clash with it, and torchvision's own nms would not run."""
    torchvision = pytest.importorskip("torchvision")
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert torchvision.ops.nms(boxes, scores, 0.5).tolist() == [0, 2]  # box 1 overlaps box 0 (IoU 0.81)
