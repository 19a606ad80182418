"""The GPU timing of the kernel benchmarks (side_by_side.py): CUDA event clock and L2 flush."""
import time

import pytest
import torch

from side_by_side import CUDA, _l2_flush, cuda_event_clock, flush_l2

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="needs CUDA")]


def _span(cycles: int) -> tuple[float, float]:
    """(seconds on the event clock, host seconds to queue it) for a GPU busy-wait of `cycles`."""
    t0 = cuda_event_clock()
    h0 = time.perf_counter()
    torch.cuda._sleep(cycles)  # the device spins; the host returns at once
    host = time.perf_counter() - h0
    return cuda_event_clock() - t0, host


def test_cuda_event_clock_reads_device_work():
    """Twice the device work reads about twice the time, and the host's part (queuing the
    work) is a small share of it: the clock counts what the GPU did, not when the host returned."""
    _span(1000)  # first event, CUDA context
    one, host = _span(20_000_000)  # ~10 ms at 2 GHz
    two, _ = _span(40_000_000)
    assert one > 1e-3, f"20M cycles read as {one * 1e3:.3f} ms"
    assert 1.6 < two / one < 2.4, f"{one * 1e3:.2f} ms then {two * 1e3:.2f} ms for twice the cycles"
    assert host < 0.5 * one, f"queuing took {host * 1e3:.2f} ms of {one * 1e3:.2f} ms"


def test_flush_l2_overwrites_more_than_the_l2():
    flush_l2()
    l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0)
    assert _l2_flush[0].numel() * _l2_flush[0].element_size() >= 4 * l2
    assert _l2_flush[0].device.type == "cuda" and not _l2_flush[0].any()
