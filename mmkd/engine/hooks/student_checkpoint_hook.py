"""Write a plain-mmdet student checkpoint next to every checkpoint an mmkd run saves."""
from __future__ import annotations

import glob
import os
import os.path as osp
from typing import Optional, Set

from mmdet.registry import HOOKS
from mmengine.dist import master_only
from mmengine.hooks import Hook

from ...utils.checkpoint import export_student_checkpoint


@HOOKS.register_module()
class StudentCheckpointHook(Hook):
    """After mmengine's CheckpointHook saves ``epoch_N.pth`` (or a ``best_*.pth``), write
    ``epoch_N_student.pth``: the student's weights under plain mmdet key names plus
    ``dataset_meta``, without optimizer state, teacher or distillation-only modules. It loads with
    the student's own config in plain mmdet (``tools/test.py``, ``DetInferencer``, mmdeploy).

    Twins whose checkpoint was deleted (``max_keep_ckpts``) are deleted too.

    Args:
        use_ema: export the EMA weights (``ema_state_dict``) instead of the live ones.
    """

    priority = 'LOWEST'  # after CheckpointHook (VERY_LOW) has written its file

    def __init__(self, use_ema: bool = False) -> None:
        self.use_ema = use_ema
        self._done: Set[str] = set()

    def _ckpt_paths(self, runner) -> Set[str]:
        info = runner.message_hub.runtime_info
        return {v for k, v in info.items()
                if (k == 'last_ckpt' or k.startswith('best_ckpt')) and isinstance(v, str)}

    @master_only
    def _sync(self, runner) -> None:
        new = [p for p in sorted(self._ckpt_paths(runner))
               if p not in self._done and not p.endswith('_student.pth') and osp.isfile(p)]
        if not new:  # the common case, every iteration: two dict lookups
            return
        for path in new:
            out = export_student_checkpoint(path, use_ema=self.use_ema)
            self._done.add(path)
            runner.logger.info(f'student-only checkpoint for plain mmdet: {out}')
        for twin in glob.glob(osp.join(runner.work_dir, '*_student.pth')):
            if not osp.exists(twin[:-len('_student.pth')] + '.pth'):
                os.remove(twin)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._sync(runner)

    def after_train_epoch(self, runner) -> None:
        self._sync(runner)

    def after_val_epoch(self, runner, metrics: Optional[dict] = None) -> None:
        self._sync(runner)

    def after_train(self, runner) -> None:
        self._sync(runner)
