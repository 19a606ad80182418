"""dprl._C: builds, matches the numpy reference, and the package falls back cleanly without it."""
import ast
import enum
import warnings
from pathlib import Path

import numpy as np
import pytest

import dprl
import dprl.rewards.backend as backend
from dprl.rewards import best_iou, box_iou
from dprl.rewards.reference import box_iou_reference


def test_extension_is_built():
    # setup.sh builds it; a missing build must not pass CI silently.
    assert backend.native_backend() is not None
    assert backend.get_backend().name == "native"


@pytest.mark.parametrize("a, b, expected", [
    ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
    ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),
    ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),  # touching edges: no overlap
    ([0, 0, 10, 10], [2, 2, 4, 4], 4 / 100),  # contained
    ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),
    ([10, 10, 0, 0], [0, 0, 10, 10], 0.0),  # swapped corners: invalid box
    ([0, 0, 0, 10], [0, 0, 10, 10], 0.0),  # zero width
    ([np.nan] * 4, [0, 0, 10, 10], 0.0),  # "no box parsed"
    ([0, 0, np.inf, 10], [0, 0, 10, 10], 0.0),
    ([0, 0, 1e38, 1e38], [0, 0, 3e38, 3e38], 1 / 9),  # float32 products would overflow
])
def test_hand_computed(a, b, expected):
    for fn in (box_iou, box_iou_reference):
        got = fn(np.array([a], np.float32), np.array([b], np.float32))
        assert got.shape == (1, 1) and got.dtype == np.float32
        assert got[0, 0] == pytest.approx(expected, rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("n, m", [(0, 3), (3, 0), (1, 1), (7, 5), (700, 300)])  # 210k pairs: threaded
def test_matches_reference_on_random_and_degenerate_boxes(n, m):
    rng = np.random.default_rng(n * 1000 + m)

    def boxes(k):
        xy = rng.uniform(-50, 1050, size=(k, 2))
        wh = rng.uniform(-20, 400, size=(k, 2))  # some negative: invalid boxes
        out = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
        bad = rng.random(k) < 0.05
        out[bad, rng.integers(0, 4)] = rng.choice([np.nan, np.inf, -np.inf])
        return out

    a, b = boxes(n), boxes(m)
    got = box_iou(a, b)
    np.testing.assert_allclose(got, box_iou_reference(a, b), rtol=1e-6, atol=1e-7)
    assert got.shape == (n, m) and np.isfinite(got).all() and (got >= 0).all() and (got <= 1).all()


def test_thread_count_does_not_change_the_result():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 100, (512, 4)).astype(np.float32)
    a[:, 2:] += a[:, :2]
    one = backend.native_backend().box_iou(a, a, max_threads=1)
    two = backend.native_backend().box_iou(a, a, max_threads=2)
    assert np.array_equal(one, two)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match=r"a must have shape \[N, 4\]"):
        box_iou(np.zeros((3, 5)), np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"b must have shape \[N, 4\]"):
        backend.native_backend().box_iou(np.zeros((1, 4), np.float32), np.zeros((4,), np.float32))
    with pytest.raises(TypeError, match="must hold numbers"):
        box_iou(np.array([["a"] * 4]), np.zeros((1, 4)))


def test_best_iou_over_several_ground_truths():
    pred = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [np.nan] * 4], np.float32)
    gts = [np.array([[50, 50, 60, 60], [0, 0, 10, 20]]), np.zeros((0, 4)), [[0, 0, 10, 10]]]
    np.testing.assert_allclose(best_iou(pred, gts), [0.5, 0.0, 0.0])
    with pytest.raises(ValueError, match="ground-truth lists"):
        best_iou(pred, gts[:2])


def test_fallback_without_extension_warns_once_and_agrees(monkeypatch):
    a = np.array([[0, 0, 10, 10], [1, 1, 5, 5]], np.float32)
    expected = box_iou(a, a)
    monkeypatch.setattr(backend, "_resolved", False)
    monkeypatch.setattr(backend, "_native", None)
    import builtins

    real_import = builtins.__import__

    def no_ext(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "dprl" and fromlist and "_C" in fromlist:
            raise ImportError("simulated missing build")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", no_ext)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = box_iou(a, a)
        second = box_iou(a, a)
    assert [str(w.message) for w in caught if "dprl._C" in str(w.message)].__len__() == 1
    np.testing.assert_array_equal(first, expected)
    np.testing.assert_array_equal(second, expected)


# --- dprl/_C.pyi, the extension's type stub, against the built module ------------------------
STUB = Path(dprl.__file__).parent / "_C.pyi"


def _docstring(node) -> str | None:
    doc = ast.get_docstring(node, clean=True)
    return None if doc is None else " ".join(doc.split())


def _attribute_docs(body) -> dict[str, str]:
    """`name = value` or `name: type` followed by a string literal: {name: that string}."""
    docs = {}
    for node, nxt in zip(body, body[1:]):
        target = (node.targets[0] if isinstance(node, ast.Assign) else
                  node.target if isinstance(node, ast.AnnAssign) else None)
        if (isinstance(target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[target.id] = " ".join(nxt.value.value.split())
    return docs


def _stub_params(fn: ast.FunctionDef) -> list[str]:
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args]
    names = names[1:] if names[:1] == ["self"] else names
    return names + (["*"] if a.kwonlyargs else []) + [x.arg for x in a.kwonlyargs]


def _bound_signature(obj) -> tuple[list[str], str]:
    """Parameter names (with "*" for keyword-only) and the docstring text of a pybind11 function,
    read from the signature line pybind11 puts first in __doc__."""
    head, _, doc = obj.__doc__.partition("\n")
    inside = head[head.index("(") + 1: head.rindex(") ->")]
    pieces, depth, cur = [], 0, ""
    for ch in inside:  # split on the commas outside brackets (defaults hold some)
        depth += ch in "([<" and 1 or ch in ")]>" and -1 or 0
        if ch == "," and depth == 0:
            pieces.append(cur)
            cur = ""
        else:
            cur += ch
    pieces.append(cur)
    names = [p.split(":")[0].split("=")[0].strip() for p in pieces if p.strip()]
    names = [n for n in names if n != "self"]
    return names, " ".join(doc.split())


def _public(names) -> set[str]:
    return {n for n in names if not n.startswith("_")}


def test_stub_names_match_the_built_module():
    _C = backend.native_backend().module
    tree = ast.parse(STUB.read_text())
    stub = {node.name: node for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    stub_globals = _public(stub) | _public(
        n.target.id if isinstance(n, ast.AnnAssign) else n.targets[0].id
        for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign)))
    assert stub_globals == _public(dir(_C))
    assert _docstring(tree) == " ".join(_C.__doc__.split())


def test_stub_functions_match_the_built_module():
    _C = backend.native_backend().module
    tree = ast.parse(STUB.read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            params, doc = _bound_signature(getattr(_C, node.name))
            assert _stub_params(node) == params, node.name
            assert _docstring(node) == doc, node.name


def test_stub_classes_and_enums_match_the_built_module():
    _C = backend.native_backend().module
    tree = ast.parse(STUB.read_text())
    for node in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        bound = getattr(_C, node.name)
        assert _docstring(node) == " ".join(bound.__doc__.split()), node.name
        attr_docs = _attribute_docs(node.body)
        if issubclass(bound, enum.Enum):
            base = ast.unparse(node.bases[0])
            assert issubclass(bound, {"enum.Enum": enum.Enum, "enum.Flag": enum.Flag}[base])
            values = {n.targets[0].id: n.value.value for n in node.body
                      if isinstance(n, ast.Assign)}
            assert values == {m.name: m.value for m in bound}, node.name
            assert attr_docs == {m.name: " ".join(m.__doc__.split()) for m in bound}, node.name
            continue
        fields = {n.target.id for n in node.body if isinstance(n, ast.AnnAssign)}
        methods = {n.name: n for n in node.body if isinstance(n, ast.FunctionDef)}
        properties = {k for k, v in vars(bound).items() if isinstance(v, property)}
        assert fields == properties, node.name
        assert attr_docs == {k: " ".join(vars(bound)[k].__doc__.split()) for k in properties}
        assert set(methods) == {k for k in vars(bound) if k in ("__init__", "__repr__")
                                or not k.startswith("_") and k not in properties}, node.name
        params, doc = _bound_signature(bound.__init__)
        assert _stub_params(methods["__init__"]) == params, node.name
        assert _docstring(methods["__init__"]) == doc, node.name


def test_stub_ships_as_package_data():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(Path(dprl.__file__).parent.parent / "pyproject.toml", "rb") as f:
        package_data = tomllib.load(f)["tool"]["setuptools"]["package-data"]
    assert "_C.pyi" in package_data["dprl"]
