from .atomic import atomic_path, atomic_write
from .checkpoint import (CheckpointError, CheckpointMismatchError, CheckpointNotFoundError,
                         CorruptCheckpointError, allow_mmengine_checkpoint_types,
                         export_student_checkpoint, load_checkpoint_file, load_strict, save_atomic,
                         student_state_dict)
from .config import load_model_cfg
from .paths import REPO_ROOT, resolve_path

__all__ = ['CheckpointError', 'CheckpointMismatchError', 'CheckpointNotFoundError',
           'CorruptCheckpointError', 'REPO_ROOT', 'allow_mmengine_checkpoint_types', 'atomic_path',
           'atomic_write', 'export_student_checkpoint', 'load_checkpoint_file', 'load_model_cfg',
           'load_strict', 'resolve_path', 'save_atomic', 'student_state_dict']
