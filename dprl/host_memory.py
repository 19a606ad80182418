"""Keep freed host memory for reuse, so a CPU training pass does not page-fault on every activation.

glibc's malloc serves requests over its mmap threshold (at most 32 MiB) with fresh pages from
mmap and returns them to the kernel on free. A forward and backward pass allocates and frees
activations of that size in every layer (the 30M benchmark model's MLP: 7294 x 1536 fp32, 45 MB),
so each new tensor is ~11,000 page faults on zero-filled pages before an op can write it: on a
2-core CPU, `silu` of such a tensor took 14.8 ms with 10,942 faults per call and 2.0 ms with
none, and one GRPO update of that model faulted 300,000-740,000 pages. What the faults cost
depends on the kernel's state (huge pages free or not), which is one reason the same update
took anywhere from 7.8 s to 10.4 s from run to run.

Three glibc tunables keep freed memory in the process for the next tensor, as jemalloc and
tcmalloc (which PyTorch's CPU tuning guide and vLLM's CPU backend recommend) do:
mmap_max=0 (large blocks come from the heap), a trim threshold of 1 TiB (the heap's top is not
handed back), and tcache_count=0. The last one matters: torch allocates with posix_memalign, whose
small leftover pieces sit in the per-thread cache beside the freed block, so the block never
merges back and the next same-size tensor grows the heap instead (measured: every 64 MiB
allocation faulted without it, none with it). After the first step the update faults no page.
The cost: the process keeps its peak heap until it exits, which a training run does anyway.

Tunables are read when a process starts, so `dprl` started as a program re-executes itself once
with them set (GLIBC_TUNABLES, keeping any the user set); its children (pipeline stages,
torchrun ranks, workers) inherit them. DPRL_KEEP_FREED_MEMORY=0 leaves malloc as it is. Outside
glibc it does nothing.
"""
from __future__ import annotations

import os
import platform
import sys

ENV = "DPRL_KEEP_FREED_MEMORY"
TUNABLES = {
    "glibc.malloc.mmap_max": "0",
    "glibc.malloc.trim_threshold": str(1 << 40),
    "glibc.malloc.tcache_count": "0",
}


def tunables_env(environ) -> dict | None:
    """`environ` with TUNABLES added to GLIBC_TUNABLES -> the new environment, or None when
    nothing is to change: switched off, not glibc, or every key already set (a value the user
    chose for one of them is kept)."""
    if environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    current = [kv for kv in environ.get("GLIBC_TUNABLES", "").split(":") if kv]
    have = {kv.split("=", 1)[0] for kv in current}
    missing = [f"{k}={v}" for k, v in TUNABLES.items() if k not in have]
    if not missing:
        return None
    return {**environ, "GLIBC_TUNABLES": ":".join(current + missing)}


def reexec_keeping_freed_memory() -> None:
    """Replaces this process with the same command line under TUNABLES (same pid, so process
    groups and death signals hold); returns only when there is nothing to change or the exec
    failed. Call it before any work: nothing done before it survives."""
    env = tunables_env(os.environ)
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, sys.orig_argv, env)
    except OSError:  # the command runs on with malloc as it is
        return
