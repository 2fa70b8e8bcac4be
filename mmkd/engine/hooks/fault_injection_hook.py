"""Test-only: the hook-level kill points of :mod:`mmkd.utils.faults`."""
from __future__ import annotations

from mmdet.registry import HOOKS
from mmengine.hooks import Hook

from ...utils.faults import fault_point


@HOOKS.register_module()
class FaultInjectionHook(Hook):
    """Kill the process (SIGKILL) at ``MMKD_FAULT_AT=train_iter:N`` / ``val_iter:N`` /
    ``train_epoch:N``: after the N-th training iteration, validation iteration, or training
    epoch (after its checkpoint and student twin are written). For ``tests/test_faults.py``;
    ``tools/train.py`` adds it only when ``MMKD_FAULT_AT`` is set, and it does nothing otherwise.
    """

    priority = 'LOWEST'  # after every other hook of the same point (checkpoint, twin)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        fault_point('train_iter')

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        fault_point('val_iter')

    def after_train_epoch(self, runner) -> None:
        fault_point('train_epoch')
