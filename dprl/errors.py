"""Errors whose message is all the user needs: `dprl` prints them in one line, no traceback.

A run that stops for a reason it can state (its directory is busy, its saved state does not fit
this command, training went non-finite) raises a subclass of UserFacingError with a message
that says what happened and what to do; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserFacingError(RuntimeError):
    """A stop with a complete explanation in its message (exit status 1)."""
