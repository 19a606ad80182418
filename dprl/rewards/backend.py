"""The reward engine's two implementations behind one interface, chosen once per process.

NativeBackend runs the C++ extension dprl._C (GIL released, big batches split across threads);
ReferenceBackend runs the numpy reference in dprl.rewards.reference (the test oracle, and the
fallback when the extension is missing). Both take the same arguments and return the same arrays
bit for bit, so parse.py, iou.py and functions.py never ask which one they hold.

Arguments are checked by the callers (parse.py, iou.py, functions.py) before they get here:
texts a list or tuple, boxes float32 [N, 4], image_wh / input_wh float64 [N, 2] or None.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import reduce
from operator import or_
from types import ModuleType
from typing import Protocol

import numpy as np

from dprl.rewards import reference
from dprl.rewards.options import ParseOptions, Pick, Scope
from dprl.rewards.terms import TermKind


class ScoredTerm(Protocol):
    """What score_batch reads of a term (dprl.rewards.terms.FusedTerm is one)."""

    @property
    def kind(self) -> TermKind: ...
    @property
    def tau(self) -> float | None: ...
    @property
    def weight(self) -> float: ...


class RewardBackend(Protocol):
    """What parse.py, iou.py and functions.py call; NativeBackend and ReferenceBackend are it."""

    name: str  # "native" or "reference"

    def analyze(self, texts: Sequence, options: ParseOptions, image_wh=None, input_wh=None,
                max_threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """-> (boxes float32 [N, 4] with NaN rows, format-ok uint8 [N])."""

    def parse_letters(self, texts: Sequence, scope: Scope, max_threads: int = 0) -> np.ndarray:
        """-> choice letters, upper-cased, `<U1` [N] ("" where none)."""

    def box_iou(self, a: np.ndarray, b: np.ndarray, max_threads: int = 0) -> np.ndarray:
        """a [N, 4], b [M, 4] -> float32 [N, M]."""

    def best_iou_ragged(self, pred: np.ndarray, gt: np.ndarray, offsets: np.ndarray,
                        max_threads: int = 0) -> np.ndarray:
        """pred [N, 4], gt [K, 4], offsets int64 [N + 1] -> float32 [N]."""

    def score_batch(self, texts: Sequence, terms: Sequence[ScoredTerm], options: ParseOptions,
                    gt=None, offsets=None, image_wh=None, input_wh=None,
                    max_threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Every built-in term in one pass -> (total float32 [N], parts float32 [T, N])."""


class ReferenceBackend:
    """dprl.rewards.reference: plain numpy and regular expressions; max_threads is ignored."""

    name = "reference"

    def analyze(self, texts, options, image_wh=None, input_wh=None, max_threads=0):
        return reference.analyze_reference(texts, options, image_wh, input_wh)

    def parse_letters(self, texts, scope, max_threads=0):
        return np.array([reference.parse_letter_reference(reference.to_bytes(t), scope)
                         for t in texts], dtype="<U1")

    def box_iou(self, a, b, max_threads=0):
        return reference.box_iou_reference(a, b)

    def best_iou_ragged(self, pred, gt, offsets, max_threads=0):
        return reference.best_iou_ragged_reference(pred, gt, offsets)

    def score_batch(self, texts, terms, options, gt=None, offsets=None, image_wh=None,
                    input_wh=None, max_threads=0):
        return reference.score_batch_reference(texts, terms, options, gt, offsets, image_wh,
                                               input_wh)


def native_options(options: ParseOptions, C: ModuleType):
    """`options` as C.ParseOptions, C being the dprl._C module: the one place the two are
    mapped. Enum members map by name (tests/rewards/test_reward_backend.py holds the names
    equal); scope and pick are bools on the C++ side."""
    return C.ParseOptions(
        answer_only=options.scope is Scope.ANSWER,
        last=options.pick is Pick.LAST,
        formats=reduce(or_, (C.BoxFormat[f.name] for f in options.formats)),
        coords=C.Coords[options.coords.name],
        swapped=C.Swapped[options.swapped.name],
        clamp=options.clamp,
    )


_CACHE_SIZE = 256  # distinct options or term lists kept converted; a process uses a few


class NativeBackend:
    """dprl._C, with dprl's options converted to its bound types."""

    name = "native"
    # What this class calls: a build from older sources lacks some of it.
    NEEDS = ("analyze", "parse_letters", "box_iou", "best_iou_ragged", "score_batch",
             "pool_workers", "ParseOptions", "RewardTerm", "BoxFormat", "Coords", "Swapped",
             "TermKind")

    def __init__(self, module: ModuleType):
        self.module = module
        # Options and terms are frozen and hashable, and a reward passes the same ones every
        # step: each is converted once (converting costs as much as scoring a small batch).
        self._options: dict[ParseOptions, object] = {}
        self._terms: dict[tuple, list] = {}

    def native_options(self, options: ParseOptions):
        native = self._options.get(options)
        if native is None:
            if len(self._options) >= _CACHE_SIZE:
                self._options.clear()
            native = self._options[options] = native_options(options, self.module)
        return native

    def native_terms(self, terms: Sequence[ScoredTerm]) -> list:
        key = tuple(terms)
        native = self._terms.get(key)
        if native is None:
            if len(self._terms) >= _CACHE_SIZE:
                self._terms.clear()
            C = self.module
            native = self._terms[key] = [
                C.RewardTerm(kind=C.TermKind[t.kind.name],  # same member names
                              tau=0.0 if t.tau is None else t.tau, weight=t.weight)
                for t in terms]
        return native

    def analyze(self, texts, options, image_wh=None, input_wh=None, max_threads=0):
        return self.module.analyze(texts, self.native_options(options), image_wh=image_wh,
                                   input_wh=input_wh, max_threads=max_threads)

    def parse_letters(self, texts, scope, max_threads=0):
        codes = self.module.parse_letters(texts, answer_only=scope is Scope.ANSWER,
                                          max_threads=max_threads)  # (N,) uint8, 0 = none
        return codes.view("S1").astype("<U1")

    def box_iou(self, a, b, max_threads=0):
        return self.module.box_iou(a, b, max_threads=max_threads)

    def best_iou_ragged(self, pred, gt, offsets, max_threads=0):
        return self.module.best_iou_ragged(pred, gt, offsets, max_threads=max_threads)

    def score_batch(self, texts, terms, options, gt=None, offsets=None, image_wh=None,
                    input_wh=None, max_threads=0):
        return self.module.score_batch(texts, self.native_terms(terms),
                                       self.native_options(options), gt=gt, offsets=offsets,
                                       image_wh=image_wh, input_wh=input_wh,
                                       max_threads=max_threads)


REFERENCE = ReferenceBackend()
_native: NativeBackend | None = None
_resolved = False


def native_backend() -> NativeBackend | None:
    """The C++ backend, or None (with one warning per process) when dprl._C is not built or was
    built from older sources than this checkout. Resolved on first use, then kept."""
    global _native, _resolved
    if _resolved:
        return _native
    _resolved = True
    try:
        from dprl import _C  # type: ignore[attr-defined]
    except ImportError as err:
        warnings.warn(
            f"dprl._C (the C++ extension) is not available ({err}); using the pure-Python "
            "reference implementations, which are correct but slower. Build it with "
            "scripts/setup.sh or `pip install -e .`.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    missing = [name for name in NativeBackend.NEEDS if not hasattr(_C, name)]
    if missing:
        warnings.warn(
            f"dprl._C ({getattr(_C, '__file__', '?')}) has no {', '.join(missing)}: it was built "
            "from older sources; using the pure-Python reference. Rebuild it with "
            "`python setup.py build_ext --inplace`.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    _native = NativeBackend(_C)
    return _native


def get_backend(use_native: bool | None = None) -> RewardBackend:
    """use_native: None = C++ when built (the process's one choice); False = the reference;
    True = C++ or raise."""
    if use_native is False:
        return REFERENCE
    native = native_backend()
    if native is not None:
        return native
    if use_native:
        raise RuntimeError("use_native=True but dprl._C is not built from these sources")
    return REFERENCE
