"""mmkd: knowledge distillation for MMDetection 3.x.

``import mmkd`` registers the DistillDetector, the distillation losses and the mmkd hooks into
mmdet's registries (configs may say ``custom_imports=dict(imports=['mmkd'])`` instead), and
allow-lists the types mmengine checkpoints need under torch's ``weights_only`` loading.
"""
from .version import __version__
from .utils.checkpoint import allow_mmengine_checkpoint_types

allow_mmengine_checkpoint_types()

from . import engine, models  # noqa: E402,F401  (registers into mmdet's registries)

__all__ = ['__version__', 'engine', 'models']
