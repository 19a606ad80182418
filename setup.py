"""Declares the C++ extension dprl._C; everything else lives in pyproject.toml."""
from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

ext = Pybind11Extension(
    "dprl._C",
    sources=["csrc/bindings.cpp", "csrc/box_iou.cpp", "csrc/box_parse.cpp", "csrc/rewards.cpp",
             "csrc/worker_pool.cpp"],
    include_dirs=["csrc"],
    cxx_std=17,
    extra_compile_args=["-O3", "-ffp-contract=off"],
)

setup(ext_modules=[ext], cmdclass={"build_ext": build_ext})
