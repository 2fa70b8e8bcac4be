from .distill_ddp import DistillDataParallel
from .multi_optim import DistillOptimWrapperConstructor, train_step_multi_optim

__all__ = ['DistillDataParallel', 'DistillOptimWrapperConstructor', 'train_step_multi_optim']
