from .epoch_seed_hook import EpochSeedHook, epoch_seed
from .student_checkpoint_hook import StudentCheckpointHook
from .teacher_eval_hook import TeacherEvalHook

__all__ = ['EpochSeedHook', 'StudentCheckpointHook', 'TeacherEvalHook', 'epoch_seed']
