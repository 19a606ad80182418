"""A run's output directory is checked for writing before anything loads.

A run's first real write comes after the model and data have loaded (minutes for a 7B), and a
read-only mount, another user's directory or a full disk then ends it with a bare OSError. A
small file written and removed at the start finds all three at once, and the error says which.
"""
from __future__ import annotations

import errno
import os

from dprl.config import ConfigError

_PLAIN = {
    errno.EROFS: "is on a read-only file system",
    errno.EACCES: "cannot be written by this user (permission denied)",
    errno.EPERM: "cannot be written by this user (operation not permitted)",
    errno.ENOSPC: "is on a disk with no space left on the device",
    errno.EDQUOT: "is over this user's disk quota",
}


class OutputDirError(ConfigError):
    """The output directory cannot be written; the message says why in words."""


def explain_write_error(err: OSError, directory: str, key: str = "output_dir") -> OutputDirError | None:
    """The plain error for a failed write into `directory`, or None for an errno not covered."""
    plain = _PLAIN.get(err.errno)
    if plain is None:
        return None
    return OutputDirError(f"{key}: {directory!r} {plain} ({err.strerror}: {err.filename}); free "
                          f"space there or set {key} to a directory this run can write")


def check_writable(directory: str, key: str = "output_dir") -> None:
    """Creates `directory` and writes, syncs and removes a small file in it (named per process, so
    ranks starting together do not collide). Raises OutputDirError for a read-only, foreign or
    full destination; other OSErrors go on as they are."""
    probe = os.path.join(directory, f".write_check.{os.getpid()}")
    try:
        os.makedirs(directory, exist_ok=True)
        with open(probe, "wb") as fh:
            fh.write(b"\0" * 4096)  # one block: a full disk refuses it, an empty file it would not
            fh.flush()
            os.fsync(fh.fileno())
        os.remove(probe)
    except OSError as err:
        if os.path.exists(probe):  # created, then the disk refused its block
            os.remove(probe)
        plain = explain_write_error(err, directory, key)
        if plain is None:
            raise
        raise plain from None
