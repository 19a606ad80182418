"""Fixtures for reward tests: run a test on the Python reference and, when built, on C++."""
import pytest

from dprl._ext import native


def has_native() -> bool:
    """True when dprl._C is built from these sources (an older build lacks the reward entry points)."""
    ext = native()
    return ext is not None and all(hasattr(ext, f) for f in ("analyze", "parse_letters", "best_iou_ragged"))


needs_native = pytest.mark.skipif(not has_native(), reason="dprl._C (C++ extension) is not built")


@pytest.fixture(params=["reference", "native"])
def use_native(request):
    """False for the Python reference, True for C++ (skipped when the extension is missing)."""
    if request.param == "native" and not has_native():
        pytest.skip("dprl._C (C++ extension) is not built")
    return request.param == "native"
