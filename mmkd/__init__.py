"""mmkd: knowledge distillation for MMDetection 3.x.

``import mmkd``:

* checks the stack (torch, mmengine, mmcv with compiled ops, mmdet within the supported ranges;
  :mod:`mmkd.utils.dependencies`) and says what to fix otherwise;
* registers the DistillDetector, the distillation losses and the mmkd hooks into mmdet's
  registries (configs may say ``custom_imports=dict(imports=['mmkd'])`` instead);
* makes ``mmkd::`` config paths resolvable in mmengine configs (:mod:`mmkd.utils.config_scope`);
* allow-lists the types mmengine checkpoints need for safe (``weights_only``) loading on every
  torch version, and routes mmengine's local checkpoint loads through the same safe loader
  (:mod:`mmkd.utils.torch_compat`).
"""
from .utils.dependencies import check_environment
from .version import __version__

check_environment()

from .utils.checkpoint import allow_mmengine_checkpoint_types  # noqa: E402
from .utils.config_scope import register_mmkd_config_scope  # noqa: E402
from .utils.torch_compat import install_mmengine_safe_loader  # noqa: E402

allow_mmengine_checkpoint_types()
install_mmengine_safe_loader()
register_mmkd_config_scope()

from . import engine, models  # noqa: E402,F401  (registers into mmdet's registries)

__all__ = ['__version__', 'engine', 'models']
