from .hooks import *  # noqa: F401,F403
from .hooks import __all__ as _hooks_all
from .optim import *  # noqa: F401,F403
from .optim import __all__ as _optim_all

__all__ = list(_hooks_all) + list(_optim_all)
