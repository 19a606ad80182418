"""Times dprl and its baseline as a pair in one pytest-benchmark group, and checks that the two
agree on the very input that was timed (so a benchmark can never time a wrong kernel).

On CPU each round is wall time (time.perf_counter, pytest-benchmark's default). With CUDA the
kernel benchmarks read the GPU's clock instead (CUDA events, `cuda_event_clock`) and flush the L2
cache before every round, as triton.testing.do_bench does, so the numbers are device time of
cold-cache calls rather than host time.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch

IMPLS = ("dprl", "baseline")
CUDA = torch.cuda.is_available()


@dataclass(frozen=True)
class Rounds:
    """Rounds per benchmark: a fast subset in the normal test run, more with --bench-full."""

    rounds: int
    warmup: int  # untimed rounds first: lazy initialisation, the C++ pool, Triton's JIT


FAST = Rounds(rounds=5, warmup=1)
FULL = Rounds(rounds=10, warmup=2)


def rounds_for(config) -> Rounds:
    return FULL if config.getoption("bench_full") else FAST


# ------------------------------------------------------------------------------------------------
# The GPU path: CUDA event clock and L2 flush
# ------------------------------------------------------------------------------------------------
_origin: list = []  # the clock's first event, once one was recorded


def cuda_event_clock() -> float:
    """Seconds on the GPU's clock since its first reading. Each call records a CUDA event on the
    current stream and waits for it; pytest-benchmark reads its timer before and after a round,
    so a difference is the device time of the work queued in between, not host wall time."""
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    event.synchronize()
    if not _origin:
        _origin.append(event)
    return _origin[0].elapsed_time(event) / 1e3  # elapsed_time is in ms


_l2_flush: list = []  # one buffer, allocated on first use


def flush_l2() -> None:
    """Overwrites a 256 MB buffer (over 5x the L2 of an H100 or H200) and waits, so that the
    round after it starts with nothing of its inputs in L2 (triton.testing.do_bench does the same)."""
    if not _l2_flush:
        _l2_flush.append(torch.empty(256 << 20, dtype=torch.int8, device="cuda"))
    _l2_flush[0].zero_()
    torch.cuda.synchronize()


def kernel_marks() -> list:
    """Marks for a module of kernel benchmarks: the GPU clock when CUDA is present."""
    return [pytest.mark.benchmark(timer=cuda_event_clock)] if CUDA else []


# ------------------------------------------------------------------------------------------------
# The pair
# ------------------------------------------------------------------------------------------------
def run_pair(benchmark, config, impl: str, group: str, runs: dict[str, Callable],
             check: Callable, gpu: bool = False, info: dict | None = None):
    """Times runs[impl] in `group` and checks it against the other one of the pair.

    runs: {"dprl": fn, "baseline": fn}, each taking no argument. check(dprl_out, baseline_out)
    raises if they disagree. gpu: the work runs on CUDA (flush L2 before each round). info: op,
    shapes and the like, stored with the timings in the JSON (extra_info). Returns the timed
    run's output.
    """
    if not benchmark.enabled and not config.getoption("benchmark_disable"):
        # pytest-benchmark switches timing off by itself under xdist; a CI that asked for
        # timings must not get an empty table or JSON without a word.
        pytest.fail("pytest-benchmark disabled timing (xdist active?): run tests/bench without -n")
    r = rounds_for(config)
    benchmark.group = group
    device = torch.cuda.get_device_name() if gpu else "cpu"
    benchmark.extra_info.update(info or {}, impl=impl, device=device)
    timed = benchmark.pedantic(runs[impl], setup=flush_l2 if gpu else None, rounds=r.rounds,
                               warmup_rounds=r.warmup, iterations=1)
    other = runs[IMPLS[1 - IMPLS.index(impl)]]()
    got, want = (timed, other) if impl == "dprl" else (other, timed)
    check(got, want)
    return timed


def assert_tensors_close(got, want, rel: float = 1e-4) -> None:
    """Tensors (or tuples of them) agree to `rel` of the reference's largest magnitude, the
    accuracy an fp32 kernel holds against a float64 definition."""
    got, want = (got, want) if isinstance(want, (tuple, list)) else ((got,), (want,))
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        w = w.detach().to(g.device, torch.float32)
        scale = max(w.abs().max().item() if w.numel() else 0.0, 1e-6)
        torch.testing.assert_close(g.detach().float(), w, rtol=rel, atol=rel * scale,
                                   msg=lambda m, k=k: f"output {k}: {m}")


def assert_arrays_equal(got, want) -> None:
    """numpy arrays (or tuples of them) equal, NaN rows included: the reward engine's C++ path
    and its Python reference give the same numbers bit for bit."""
    got, want = (got, want) if isinstance(want, (tuple, list)) else ((got,), (want,))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
