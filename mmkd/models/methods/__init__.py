"""One sub-package per published distillation method."""
from . import global_knowledge  # noqa: F401
