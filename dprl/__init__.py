"""dprl: performance-first GRPO for vision-language models (the DeepPerception recipe)."""

from dprl import _torchvision_compat

_torchvision_compat.install()

__version__ = "0.1.0"
