"""One sub-package per published distillation method."""
from . import dsig, global_knowledge  # noqa: F401
