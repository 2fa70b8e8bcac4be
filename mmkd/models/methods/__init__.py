"""One sub-package per published distillation method."""
from . import dsig, gid, global_knowledge, icd  # noqa: F401

from . import dicod  # noqa: F401,E402  isort: skip  (DICOD: classifier teacher)
