from .epoch_seed_hook import EpochSeedHook, epoch_seed
from .fault_injection_hook import FaultInjectionHook
from .loss_balance_hook import LossBalanceHook
from .student_checkpoint_hook import StudentCheckpointHook
from .teacher_eval_hook import TeacherEvalHook

__all__ = ['EpochSeedHook', 'FaultInjectionHook', 'LossBalanceHook', 'StudentCheckpointHook',
           'TeacherEvalHook', 'epoch_seed']
