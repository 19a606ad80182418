"""Fixtures for reward tests: run a test on the Python reference and, when built, on C++."""
import pytest

from dprl.rewards.backend import native_backend


def has_native() -> bool:
    """True when dprl._C is built from these sources (an older build lacks the reward entry points)."""
    return native_backend() is not None


needs_native = pytest.mark.skipif(not has_native(), reason="dprl._C (C++ extension) is not built")


@pytest.fixture(params=["reference", "native"])
def use_native(request):
    """False for the Python reference, True for C++ (skipped when the extension is missing)."""
    if request.param == "native" and not has_native():
        pytest.skip("dprl._C (C++ extension) is not built")
    return request.param == "native"
