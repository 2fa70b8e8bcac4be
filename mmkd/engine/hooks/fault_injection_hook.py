"""Test-only: the kill points of :mod:`mmkd.utils.faults`, from outside the library code."""
from __future__ import annotations

from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ...utils.faults import fault_point, fault_spec


@HOOKS.register_module()
class FaultInjectionHook(Hook):
    """Kill the process (SIGKILL) at ``MMKD_FAULT_AT=POINT:N``, the N-th time ``POINT`` is
    reached (for ``tests/test_faults.py``; ``tools/train.py`` adds this hook only when
    ``MMKD_FAULT_AT`` is set):

    * ``train_iter`` / ``val_iter`` / ``train_epoch``: after a training iteration, a validation
      iteration, or a training epoch (after its checkpoint and student twin are written);
    * ``teacher_forward``: when the teacher's backbone is called (a forward pre-hook registered
      before the run): inside a training iteration, after the student's forward, or inside
      the offline PGM pass (:class:`~mmkd.models.methods.global_knowledge.PGMHook`).
    """

    priority = 'LOWEST'  # after every other hook of the same point (checkpoint, twin)

    def before_run(self, runner) -> None:
        if fault_spec()[0] != 'teacher_forward':
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        teacher = getattr(model, 'teacher', None)
        if teacher is None:
            raise RuntimeError('MMKD_FAULT_AT=teacher_forward needs a model with a teacher '
                               f'(a DistillDetector), got {type(model).__name__}')
        getattr(teacher, 'backbone', teacher).register_forward_pre_hook(
            lambda module, args: fault_point('teacher_forward'))

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        fault_point('train_iter')

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        fault_point('val_iter')

    def after_train_epoch(self, runner) -> None:
        fault_point('train_epoch')
