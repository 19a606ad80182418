"""Loads the C++ extension dprl._C, or reports once that the pure-Python paths are in use."""
from __future__ import annotations

import warnings
from types import ModuleType

_loaded: ModuleType | None = None
_tried = False


def native() -> ModuleType | None:
    """The dprl._C module, or None (with one warning per process) if it was not built."""
    global _loaded, _tried
    if not _tried:
        _tried = True
        try:
            from dprl import _C  # type: ignore[attr-defined]

            _loaded = _C
        except ImportError as err:
            warnings.warn(
                f"dprl._C (the C++ extension) is not available ({err}); using the pure-Python "
                "reference implementations, which are correct but slower. Build it with "
                "scripts/setup.sh or `pip install -e .`.",
                RuntimeWarning,
                stacklevel=2,
            )
    return _loaded


_missing: set[str] = set()


def native_fn(name: str):
    """`dprl._C.<name>`, or None when the extension is missing or was built from older sources
    than this checkout (then it warns once per name and callers use the Python path)."""
    ext = native()
    if ext is None:
        return None
    fn = getattr(ext, name, None)
    if fn is None and name not in _missing:
        _missing.add(name)
        warnings.warn(
            f"dprl._C ({getattr(ext, '__file__', '?')}) has no {name}(): it was built from older "
            "sources; using the pure-Python reference. Rebuild it with "
            "`python setup.py build_ext --inplace`.",
            RuntimeWarning,
            stacklevel=2,
        )
    return fn
