"""One sub-package per published distillation method."""
from . import dsig, gid, global_knowledge  # noqa: F401
