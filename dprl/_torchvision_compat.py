"""Makes torchvision importable next to the CPU build of torch.

The package index only has CUDA builds of torchvision. Next to torch 2.13.0+cpu its compiled ops
do not load, yet its `_meta_registrations` still registers fake kernels for `torchvision::nms`
and `torchvision::qnms`, which then fail with "operator torchvision::nms does not exist", so
`import torchvision` (and with it vLLM's Qwen2-VL module) breaks. Defining those two op schemas
before torchvision is imported lets the registrations succeed; the pure-Python transforms that
vLLM and transformers use then work. Nothing inside site-packages is edited: scripts/setup.sh
adds a one-line .pth file that calls `install()` at interpreter start, so subprocesses (vLLM
workers, torchrun ranks) get the fix too, and `import dprl` calls it as well.
"""
from __future__ import annotations

import importlib.abc
import sys

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library = None  # keeps the op definitions alive for the life of the process


def define_missing_ops() -> list[str]:
    """Defines the torchvision op schemas that are missing; returns their names.

    Only acts on a CPU build of torch: on a CUDA stack torchvision's own ops load and must not be
    defined twice.
    """
    global _library
    import torch

    if torch.version.cuda is not None or torch.version.hip is not None:
        return []
    missing = [name for name in _SCHEMAS if not _schema_exists(name)]
    if missing:
        if _library is None:
            _library = torch.library.Library("torchvision", "FRAGMENT")
        for name in missing:
            _library.define(_SCHEMAS[name])
    return missing


def _schema_exists(name: str) -> bool:
    import torch

    try:
        torch._C._get_schema(f"torchvision::{name}", "")
        return True
    except RuntimeError:
        return False


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Runs `define_missing_ops` once, just before the first `import torchvision`."""

    def find_spec(self, fullname, path, target=None):
        if fullname == "torchvision":
            sys.meta_path.remove(self)
            define_missing_ops()
        return None  # the regular finders do the import


def install() -> None:
    """Arms the fix for this process (idempotent; a no-op once torchvision is imported)."""
    if "torchvision" in sys.modules:
        return
    if not any(isinstance(f, _BeforeTorchvision) for f in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvision())
