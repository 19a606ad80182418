"""dprl.host_memory: under its malloc tunables a freed large tensor's pages are reused, not
faulted in again; `dprl` started as a program re-executes itself once with them."""
import os
import platform
import subprocess
import sys

import pytest

from dprl import host_memory
from dprl.host_memory import ENV, TUNABLES, tunables_env

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc malloc only")

# Allocates and fills a 64 MiB tensor, a small one after it (what a step's bookkeeping does), and
# frees both: three rounds to let the heap grow, then prints the page faults of the next six.
# Measured under the tunables: 16,420, 16,384, then 0 per round, with at most one more growth
# of the heap later on; without them, 16,385 every round.
PROBE = """
import resource, torch
def round_():
    big = torch.ones(16 << 20)
    small = torch.ones(8)
    del big, small
for _ in range(3):
    round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(6):
    round_()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES = (64 << 20) // os.sysconf("SC_PAGE_SIZE")  # one fill of the big tensor, page by page


def _faults(env) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout)


def _plain_env():
    return {k: v for k, v in os.environ.items() if k not in (ENV, "GLIBC_TUNABLES")}


@glibc
def test_freed_pages_are_reused_under_the_tunables():
    # Six 64 MiB tensors: at most one of them on fresh pages (the heap growing once more).
    assert _faults(tunables_env(_plain_env())) < PAGES + PAGES // 10


@glibc
def test_default_malloc_faults_every_tensor_in():
    assert _faults(_plain_env()) > 5 * PAGES  # every tensor on fresh pages: what the tunables remove


@glibc
def test_user_tunables_are_kept_and_the_env_is_final():
    env = tunables_env({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=3:glibc.malloc.arena_max=2"})
    pairs = env["GLIBC_TUNABLES"].split(":")
    assert "glibc.malloc.tcache_count=3" in pairs and "glibc.malloc.arena_max=2" in pairs
    assert "glibc.malloc.tcache_count=0" not in pairs
    assert {f"{k}={v}" for k, v in TUNABLES.items() if k != "glibc.malloc.tcache_count"} <= set(pairs)
    assert tunables_env(env) is None  # after the re-exec: nothing left to add, no second exec


@pytest.mark.parametrize("off", ["0", "false", "off"])
def test_switched_off(off):
    assert tunables_env({ENV: off}) is None


@glibc
def test_program_start_reexecs_with_the_tunables(monkeypatch):
    from dprl import cli

    calls = []

    def execve(path, argv, env):
        calls.append((path, argv, env))
        raise SystemExit(0)  # where the real exec would replace the process

    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setattr(host_memory.os, "execve", execve)
    with pytest.raises(SystemExit):
        cli.main()  # as the console script calls it
    (path, argv, env), = calls
    assert path == sys.executable and argv == sys.orig_argv
    assert set(env["GLIBC_TUNABLES"].split(":")) == {f"{k}={v}" for k, v in TUNABLES.items()}
    calls.clear()
    with pytest.raises(SystemExit):  # called by code with its arguments: no exec, argparse's --help exit
        cli.main(["--help"])
    assert not calls
