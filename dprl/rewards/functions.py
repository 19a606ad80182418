"""Reward functions by name, and the contract a researcher's own reward follows.

The contract (as TRL's): `fn(completions, **columns) -> list[float]`, one float per completion.
`completions` is a list of str (or of chat messages, whose last "content" is used); `columns` are
the dataset columns, each a list with one entry per completion. A registered function is called
with keywords only, as TRL's GRPOTrainer calls one: `fn(completions=..., **columns)`, where the
GRPO trainer's columns are `prompts` (each completion's chat messages), `completion_ids` (its
token ids), `boxes`, and every field of the sample's own record, so a reward written for TRL
(`def reward(prompts, completions, completion_ids, **kwargs)`) runs unchanged. Columns the
built-ins read:
  boxes       ground truth per sample: a box [4] or boxes [K, 4], in the parse output frame
  solution    ground truth as text (e.g. "<|box_start|>(x1,y1),(x2,y2)<|box_end|>"); used when
              `boxes` is absent, parsed anywhere in the text, last box
  image_size  (width, height) of each original image, for coords="pixels"
  input_size  (width, height) of each resized model input, for coords="pixels"
  answer      the correct choice letter ("B") or 0-based index for `mc_letter`

Built-in rewards (all in [0, 1], 0 for anything malformed; `iou` is the best over the GT boxes):
  format         0.5 for <think>..</think><answer>..</answer> + 0.5 when a box is in the answer
  iou            IoU
  iou_threshold  IoU if IoU >= tau else 0 (tau = 0.8 by default; DeepPerception's original pays
                 only for IoU > 0.8, strictly, which differs only when IoU equals tau exactly)
  iou_squared    IoU ** 2 (Perception-R1)
  acc            1 if IoU >= tau else 0 (KVG-Bench accuracy, tau = 0.5)
  mc_letter      1 if the answer's choice letter equals `answer` else 0 (FGVR)
A name may carry its threshold: "acc@0.5", "iou_threshold@0.65".
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from dprl.config.rewards import BUILTIN_REWARDS, REGISTERED_REWARDS, RewardTermConfig, reward_names
from dprl.rewards.backend import RewardBackend, get_backend
from dprl.rewards.iou import best_iou, ragged_boxes
from dprl.rewards.options import ParseOptions, Scope, make_options
from dprl.rewards.parse import analyze, check_texts, parse_letters, pixel_sizes
from dprl.rewards.reference import (format_score_reference, iou_score_reference,
                                    weighted_total_reference)
from dprl.rewards.terms import FusedTerm, TermKind

RewardFn = Callable[..., list]
BUILTIN = BUILTIN_REWARDS
# A reward term is its config section: name, weight, tau; `reward`, `threshold` and `label` read
# them, and `check()` validates it (the config loader calls it too).
Term = RewardTermConfig


def register_reward(name: str, fn: RewardFn | None = None):
    """Registers `fn(completions, **columns) -> list[float]` under `name` (usable as decorator)."""
    if name in BUILTIN or "@" in name:
        raise ValueError(f"{name!r} is a built-in reward name or uses '@'; pick another name")

    def add(f: RewardFn) -> RewardFn:
        if not callable(f):
            raise TypeError(f"reward {name!r} must be callable, got {type(f).__name__}")
        REGISTERED_REWARDS[name] = f
        return f

    return add if fn is None else add(fn)


available_rewards = reward_names


def completion_texts(completions) -> list:
    """list of str/bytes, or of chat message lists (the last message's content is scored)."""
    if isinstance(completions, (str, bytes)) or not isinstance(completions, (list, tuple)):
        raise TypeError(f"completions must be a list, got {type(completions).__name__}")
    if completions and isinstance(completions[0], (list, tuple)):
        return [c[-1]["content"] if c else "" for c in completions]
    return list(completions) if isinstance(completions, tuple) else completions


@dataclass
class Batch:
    """One batch of completions with its columns; parses and scores IoU at most once, however
    many reward terms read them."""

    texts: list
    columns: dict
    options: ParseOptions = field(default_factory=ParseOptions)
    max_threads: int = 0  # C++ threads for big batches (0 = all cores)
    use_native: bool | None = None  # None: C++ when built; False: the Python reference
    _analysis: tuple | None = None
    _iou: np.ndarray | None = None

    def analysis(self) -> tuple[np.ndarray, np.ndarray]:
        if self._analysis is None:
            self._analysis = analyze(self.texts, self.options,
                                     image_size=self.columns.get("image_size"),
                                     input_size=self.columns.get("input_size"),
                                     use_native=self.use_native, max_threads=self.max_threads)
        return self._analysis  # boxes (N, 4), format_ok (N,)

    def gt_boxes(self):
        if "boxes" in self.columns:
            return self.columns["boxes"]
        if "solution" in self.columns:
            return analyze(list(self.columns["solution"]), self.options, scope="anywhere",
                           image_size=self.columns.get("image_size"),
                           input_size=self.columns.get("input_size"),
                           use_native=self.use_native)[0]  # (N, 4)
        raise KeyError("IoU rewards need a 'boxes' or 'solution' column with the ground truth")

    def iou(self) -> np.ndarray:
        if self._iou is None:
            self._iou = best_iou(self.analysis()[0], self.gt_boxes(), use_native=self.use_native,
                                 max_threads=self.max_threads)  # (N,)
        return self._iou


def _format(batch: Batch, tau) -> np.ndarray:
    boxes, ok = batch.analysis()
    # The box half reads the answer region even when boxes are searched anywhere.
    if batch.options.scope is not Scope.ANSWER:
        boxes = analyze(batch.texts, batch.options, scope=Scope.ANSWER,
                        image_size=batch.columns.get("image_size"),
                        input_size=batch.columns.get("input_size"),
                        use_native=batch.use_native, max_threads=batch.max_threads)[0]
    return format_score_reference(ok, boxes)


def _mc_letter(batch: Batch, tau) -> np.ndarray:
    if "answer" not in batch.columns:
        raise KeyError("mc_letter needs an 'answer' column with the correct choice letters")
    truth = [chr(ord("A") + a) if isinstance(a, (int, np.integer)) else str(a).strip().upper()
             for a in batch.columns["answer"]]
    if len(truth) != len(batch.texts):
        raise ValueError(f"got {len(batch.texts)} completions but {len(truth)} answers")
    got = parse_letters(batch.texts, scope=batch.options.scope, use_native=batch.use_native)  # (N,) "<U1", "" = none
    return ((got == np.array(truth, dtype="<U1")) & (got != "")).astype(np.float32)


def _iou_term(kind: TermKind) -> Callable[[Batch, float], np.ndarray]:
    return lambda batch, tau: iou_score_reference(kind, tau, batch.iou())


# Term by term, for a reward that mixes built-in and registered terms; the same formulas as the
# fused pass (reference.score_batch_reference, csrc/rewards.cpp).
_SCORERS: dict[str, Callable[[Batch, float], np.ndarray]] = {
    **{k.value: _iou_term(k) for k in TermKind if k is not TermKind.FORMAT},
    TermKind.FORMAT.value: _format,
    "mc_letter": _mc_letter,
}
assert set(_SCORERS) == set(BUILTIN)


def _score_term(term: Term, batch: Batch) -> np.ndarray:
    """One term's values, float32 [N], finite."""
    if term.reward in _SCORERS:
        out = _SCORERS[term.reward](batch, term.threshold)
    else:
        out = REGISTERED_REWARDS[term.reward](completions=batch.texts, **batch.columns)  # TRL's call
    arr = np.asarray(out, dtype=np.float32)
    if arr.shape != (len(batch.texts),):
        raise ValueError(f"reward {term.reward!r} returned shape {arr.shape}, expected "
                         f"({len(batch.texts)},): one float per completion")
    # A researcher's function may return NaN/inf; a training step must not see them.
    return np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)


class RewardFunction:
    """A weighted sum of named rewards that follows the contract itself:
    `fn(completions, **columns) -> list[float]`. `score` also returns each term's values."""

    def __init__(self, terms, options: ParseOptions | None = None, max_threads: int = 0,
                 use_native: bool | None = None, **parse_options):
        """terms: Term, name, or (name, weight[, tau]) each. use_native: None = C++ when built;
        False = the Python reference; True = C++ or raise. When every term is built in (no
        mc_letter, nothing registered) all of them are scored in one fused pass."""
        self.terms = [t if isinstance(t, Term) else Term(*t) if isinstance(t, tuple) else Term(t)
                      for t in terms]
        if not self.terms:
            raise ValueError("a reward needs at least one term")
        for term in self.terms:
            term.check()
        self.options = make_options(options, **parse_options)
        self.max_threads = max_threads
        self.use_native = use_native
        self.__name__ = "+".join(t.label for t in self.terms)
        # What the fused pass reads of each term; None when some term needs the term-by-term path.
        fused = [FusedTerm(TermKind.of(t.reward), t.threshold, t.weight) for t in self.terms]
        self._fused_terms = fused if all(f.kind is not None for f in fused) else None

    def _fused_backend(self) -> RewardBackend | None:
        """The backend that scores every term in one pass, or None when some term needs the
        term-by-term path."""
        return get_backend(self.use_native) if self._fused_terms is not None else None

    def _score_fused(self, backend: RewardBackend,
                     batch: Batch) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Every term in one pass: parse, format, best IoU and the weighted sum per text."""
        texts, cols, opt = check_texts(batch.texts), batch.columns, self.options
        n = len(texts)
        gt = offsets = None  # format alone reads no ground truth
        if any(t.kind is not TermKind.FORMAT for t in self._fused_terms):
            gt, offsets = ragged_boxes(batch.gt_boxes(), n)  # (K, 4), (N + 1,)
        image_wh, input_wh = pixel_sizes(opt, cols.get("image_size"), cols.get("input_size"), n)
        total, parts = backend.score_batch(texts, self._fused_terms, opt, gt=gt, offsets=offsets,
                                           image_wh=image_wh, input_wh=input_wh,
                                           max_threads=self.max_threads)  # (N,), (T, N)
        return total, {t.label: parts[k] for k, t in enumerate(self.terms)}

    def score(self, completions, **columns) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """-> (total float32 [N], {term label: float32 [N] before weighting})."""
        texts = completion_texts(completions)
        batch = Batch(texts, columns, self.options, self.max_threads, self.use_native)
        backend = self._fused_backend()
        if backend is not None:
            return self._score_fused(backend, batch)
        parts = {t.label: _score_term(t, batch) for t in self.terms}
        total = weighted_total_reference([t.weight for t in self.terms],
                                         [parts[t.label] for t in self.terms], len(texts))
        return total, parts

    def __call__(self, completions, **columns) -> list[float]:
        return self.score(completions, **columns)[0].tolist()


def reward_fn(name: str, tau: float | None = None, **parse_options) -> RewardFunction:
    """One named reward with the contract `fn(completions, **columns) -> list[float]`."""
    return RewardFunction([Term(name, 1.0, tau)], **parse_options)


def from_config(cfg) -> RewardFunction:
    """The weighted reward a `RewardConfig` (dprl.config) describes: its terms and its parse
    options are the reward's own objects."""
    return RewardFunction(list(cfg.functions), cfg.parse)
