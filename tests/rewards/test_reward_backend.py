"""The boundary into dprl._C: enums and options map onto the bound types, both backends offer
the same methods and scores, and the choice between them is made once per process."""
import inspect
import sys
import types
import warnings

import numpy as np
import pytest

import dprl.rewards.backend as backend
from dprl.rewards import RewardFunction, register_reward
from dprl.rewards.backend import NativeBackend, ReferenceBackend, get_backend, native_backend, native_options
from dprl.rewards.options import BoxFormat, Coords, ParseOptions, Swapped
from dprl.rewards.terms import TermKind

# Not imported from conftest: that name is another file's when tests/train is collected too.
needs_native = pytest.mark.skipif(native_backend() is None, reason="dprl._C is not built")


@needs_native
@pytest.mark.parametrize("python_enum", [BoxFormat, Coords, Swapped, TermKind])
def test_python_enums_have_the_bound_member_names(python_enum):
    # native_options and NativeBackend.score_batch map members by name.
    bound = getattr(native_backend().module, python_enum.__name__)
    assert [m.name for m in python_enum] == [m.name for m in bound]


@needs_native
def test_options_convert_to_the_bound_class():
    C = native_backend().module
    default = native_options(ParseOptions(), C)
    assert (default.answer_only, default.last, default.clamp) == (True, True, False)
    assert default.formats == C.BoxFormat.POINTS | C.BoxFormat.LIST | C.BoxFormat.TUPLE
    assert (default.coords, default.swapped) == (C.Coords.AUTO, C.Swapped.FIX)
    opt = native_options(ParseOptions(scope="anywhere", pick="first", formats=("tuple", BoxFormat.LIST),
                       coords=Coords.PIXELS, swapped="reject", clamp=True), C)
    assert (opt.answer_only, opt.last, opt.clamp) == (False, False, True)
    assert opt.formats == C.BoxFormat.LIST | C.BoxFormat.TUPLE
    assert (opt.coords, opt.swapped) == (C.Coords.PIXELS, C.Swapped.REJECT)
    assert repr(opt) == ("ParseOptions(answer_only=False, last=False, "
                         "formats=BoxFormat.LIST|TUPLE, coords=Coords.PIXELS, "
                         "swapped=Swapped.REJECT, clamp=True)")


@needs_native
def test_bound_classes_check_their_fields():
    C = native_backend().module
    with pytest.raises(ValueError, match="non-empty combination"):
        C.ParseOptions(formats=C.BoxFormat(0))
    opt = C.ParseOptions()
    with pytest.raises(TypeError):
        opt.coords = 3  # an integer code is not a Coords
    with pytest.raises(TypeError):
        C.ParseOptions(True)  # every field is keyword-only
    term = C.RewardTerm(kind=C.TermKind.ACC, tau=0.5, weight=2.0)
    assert repr(term) == "RewardTerm(kind=TermKind.ACC, tau=0.5, weight=2.0)"


def test_words_and_members_make_the_same_options():
    words = ParseOptions(scope="anywhere", formats=("list",), coords="fraction", swapped="reject")
    members = ParseOptions(scope=words.scope, formats=(BoxFormat.LIST,), coords=Coords.FRACTION,
                           swapped=Swapped.REJECT)
    assert words == members and hash(words) == hash(members)
    assert words.coords == "fraction" and words.formats == ("list",)
    with pytest.raises(ValueError, match="formats must be a non-empty subset"):
        ParseOptions(formats=())
    with pytest.raises(ValueError, match="swapped must be one of fix, reject"):
        ParseOptions(swapped="swap")


def test_both_backends_have_the_same_methods():
    public = lambda cls: {k: inspect.signature(v) for k, v in vars(cls).items()  # noqa: E731
                          if callable(v) and not k.startswith("_")}
    native, reference = public(NativeBackend), public(ReferenceBackend)
    native.pop("native_options")  # the cached conversions, C++ only
    native.pop("native_terms")
    assert native == reference
    assert set(reference) == {k for k in vars(backend.RewardBackend) if not k.startswith("_")
                              and callable(vars(backend.RewardBackend)[k])}


COMPLETIONS = [
    "<think>a</think><answer><|box_start|>(100,100),(300,300)<|box_end|></answer>",
    "<think>a</think><answer>[100, 100, 300, 320]</answer> [1, 2, 3, 4]",
    "[0.1, 0.1, 0.3, 0.3] <answer>[100, 100, 300, 400]</answer>",
    "<think>b</think><answer>none</answer>",
    "garbage \xff",
    "",
]
GT = [[[100, 100, 300, 300]], [[0, 0, 10, 10], [100, 100, 300, 300]], [[1, 1, 2, 2]], [],
      [[5, 5, 6, 6]], [[0, 0, 1, 1]]]
TERMS = [("format", 0.5), ("iou", 1.0), ("iou_threshold", 2.0, 0.9), ("iou_squared", -1.0),
         ("acc", 0.25, 0.5)]


@pytest.mark.parametrize("scope", ["answer", "anywhere"])
def test_fused_pass_equals_term_by_term(scope, use_native):
    """The one-pass score_batch (C++ or reference) and the term-by-term path (taken when a
    registered reward is in the sum) give the same parts and totals, bit for bit."""
    register_reward("zero_for_backend_test", lambda completions, **c: [0.0] * len(completions))
    fused = RewardFunction(TERMS, use_native=use_native, scope=scope)
    mixed = RewardFunction(TERMS + [("zero_for_backend_test", 1.0)], use_native=use_native,
                           scope=scope)
    assert fused._fused_backend() is get_backend(use_native)
    assert mixed._fused_backend() is None
    total, parts = fused.score(COMPLETIONS, boxes=GT)
    mixed_total, mixed_parts = mixed.score(COMPLETIONS, boxes=GT)
    for label in parts:
        np.testing.assert_array_equal(parts[label], mixed_parts[label], err_msg=label)
    np.testing.assert_array_equal(total, mixed_total)


def test_score_batch_reads_no_ground_truth_for_format_alone(use_native):
    fn = RewardFunction([("format", 1.0)], use_native=use_native)
    # the second has text after </answer>: a box but not the format
    np.testing.assert_array_equal(fn.score(COMPLETIONS)[0], [1.0, 0.5, 0.5, 0.5, 0.0, 0.0])
    kernels = get_backend(use_native)
    iou_only = RewardFunction(["iou"])._fused_terms
    with pytest.raises(ValueError, match="IoU terms need the ground truth"):
        kernels.score_batch(COMPLETIONS, iou_only, ParseOptions())


def test_the_choice_is_made_once_and_a_stale_build_warns_once(monkeypatch):
    assert get_backend() is get_backend()
    stale = types.ModuleType("dprl._C")
    stale.box_iou = lambda a, b, max_threads=0: None  # an old build: no ParseOptions, ...
    monkeypatch.setattr(backend, "_resolved", False)
    monkeypatch.setattr(backend, "_native", None)
    monkeypatch.setitem(sys.modules, "dprl._C", stale)
    import dprl
    monkeypatch.setattr(dprl, "_C", stale, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, second = get_backend(), get_backend()
    assert first is second and first.name == "reference"
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "older sources" in messages[0] and "ParseOptions" in messages[0]
    with pytest.raises(RuntimeError, match="use_native=True"):
        get_backend(True)
