from .detectors import DistillDetector
from .distill_context import DistillContext, StudentDenseTargets, StudentRoIs
from .losses import *  # noqa: F401,F403
from .losses import __all__ as _losses_all

from . import methods  # noqa: F401,E402  isort: skip  (registers the methods' losses and hooks)

__all__ = (['DistillDetector', 'DistillContext', 'StudentDenseTargets', 'StudentRoIs']
           + list(_losses_all))
