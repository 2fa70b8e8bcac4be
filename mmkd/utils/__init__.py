from .checkpoint import (CheckpointMismatchError, allow_mmengine_checkpoint_types,
                         export_student_checkpoint, load_strict, student_state_dict)
from .config import load_model_cfg
from .paths import REPO_ROOT, resolve_path

__all__ = ['CheckpointMismatchError', 'REPO_ROOT', 'allow_mmengine_checkpoint_types',
           'export_student_checkpoint', 'load_model_cfg', 'load_strict', 'resolve_path',
           'student_state_dict']
