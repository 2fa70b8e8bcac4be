"""Write a plain-mmdet student checkpoint next to every checkpoint an mmkd run saves."""
from __future__ import annotations

import os
import os.path as osp
from typing import Optional, Set

from mmdet.registry import HOOKS
from mmengine.dist import master_only
from mmengine.hooks import CheckpointHook, Hook

from ...utils.checkpoint import (TWIN_WRITER, CheckpointError, checkpoint_meta,
                                 export_student_checkpoint, load_checkpoint_file, student_path_for)


def twin_written_for(twin: str, source: str) -> bool:
    """True when ``twin`` is the student twin this hook wrote for ``source`` (its
    ``meta['mmkd']`` says so). Reads only the metadata (memory-mapped load)."""
    try:
        meta = checkpoint_meta(load_checkpoint_file(twin, 'student twin', mmap=True))
    except (CheckpointError, OSError):
        return False
    info = meta.get('mmkd') or {}
    return info.get('writer') == TWIN_WRITER and info.get('twin_of') == osp.realpath(source)


@HOOKS.register_module()
class StudentCheckpointHook(Hook):
    """After mmengine's CheckpointHook saves ``epoch_N.pth`` (or a ``best_*.pth``), write
    ``epoch_N_student.pth``: the student's weights under plain mmdet key names plus
    ``dataset_meta``, without optimizer state, teacher or distillation-only modules. It loads with
    the student's own config in plain mmdet (``tools/test.py``, ``DetInferencer``, mmdeploy).

    The hook touches only files it wrote itself (their ``meta['mmkd']`` records
    ``writer='StudentCheckpointHook'`` and the full checkpoint's path):

    * a twin is written atomically (temporary file + rename); an existing file of that name that
      the hook did not write (e.g. the user's own ``epoch_1_student.pth``) is left as it is, with a
      warning, and no twin is written for that checkpoint;
    * a twin is removed only in step with mmengine's own rotation: when ``max_keep_ckpts``
      removes ``epoch_K.pth``, or a new best checkpoint replaces the previous ``best_*.pth``.
      Each removal is logged. Files the user put in the work dir (an exported student, a twin
      whose full checkpoint the user deleted) are never removed.

    Args:
        use_ema: export the EMA weights (``ema_state_dict``) instead of the live ones.
    """

    priority = 'LOWEST'  # after CheckpointHook (VERY_LOW) has written its file

    def __init__(self, use_ema: bool = False) -> None:
        self.use_ema = use_ema
        self._done: Set[str] = set()  # checkpoints handled by this process
        self._kept: Optional[Set[str]] = None  # mmengine's kept checkpoints at the last look

    # ---- what mmengine saved and keeps ---------------------------------------------------------
    @staticmethod
    def _ckpt_paths(runner) -> Set[str]:
        info = runner.message_hub.runtime_info
        return {v for k, v in info.items()
                if (k == 'last_ckpt' or k.startswith('best_ckpt')) and isinstance(v, str)}

    @staticmethod
    def _checkpoint_hook(runner) -> Optional[CheckpointHook]:
        return next((h for h in runner.hooks if isinstance(h, CheckpointHook)), None)

    @classmethod
    def _kept_paths(cls, runner, ids=None) -> Optional[Set[str]]:
        """The checkpoints mmengine's CheckpointHook keeps (``keep_ckpt_ids`` or ``ids``), or
        None when it does not rotate (``max_keep_ckpts`` <= 0)."""
        hook = cls._checkpoint_hook(runner)
        if hook is None or hook.max_keep_ckpts <= 0 or not hasattr(hook, 'keep_ckpt_ids'):
            return None
        ids = hook.keep_ckpt_ids if ids is None else ids
        return {hook.file_backend.join_path(hook.out_dir, hook.filename_tmpl.format(i))
                for i in ids}

    @classmethod
    def _rotates_without_ids(cls, runner) -> bool:
        """mmengine's CheckpointHook rotates (``max_keep_ckpts`` > 0) but, before mmengine 0.8,
        keeps no ``keep_ckpt_ids``."""
        hook = cls._checkpoint_hook(runner)
        return (hook is not None and hook.max_keep_ckpts > 0
                and not hasattr(hook, 'keep_ckpt_ids'))

    # ---- hook points -------------------------------------------------------------------------
    @master_only
    def before_train(self, runner) -> None:
        """Note what mmengine keeps; on resume it may already have removed checkpoints beyond a
        smaller ``max_keep_ckpts`` (those still in the resumed message hub)."""
        restored = runner.message_hub.runtime_info.get('keep_ckpt_ids')
        before = self._kept_paths(runner, restored) if restored else None
        self._kept = self._kept_paths(runner)
        if before and self._kept is not None:
            self._remove_twins(runner, before - self._kept)
        self._best = {p for k, p in runner.message_hub.runtime_info.items()
                      if k.startswith('best_ckpt') and isinstance(p, str)}

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._sync(runner)

    def after_train_epoch(self, runner) -> None:
        self._sync(runner)

    def after_val_epoch(self, runner, metrics: Optional[dict] = None) -> None:
        self._sync(runner)

    def after_train(self, runner) -> None:
        self._sync(runner)

    # ---- work --------------------------------------------------------------------------------
    @master_only
    def _sync(self, runner) -> None:
        new = [p for p in sorted(self._ckpt_paths(runner))
               if p not in self._done and not p.endswith('_student.pth') and osp.isfile(p)]
        if not new:  # the common case, every iteration: two dict lookups
            return
        for path in new:
            self._write_twin(runner, path)
            self._done.add(path)
        # follow mmengine's own removals: rotated epoch/iter checkpoints and replaced bests
        kept = self._kept_paths(runner)
        gone: Set[str] = set()
        if kept is not None and self._kept is not None:
            gone |= self._kept - kept
        elif kept is None and self._rotates_without_ids(runner):
            # mmengine < 0.8 keeps no list of kept checkpoints: its rotation deletes the files,
            # so follow the checkpoints this process saw saved that are gone now
            gone |= {p for p in self._done if not osp.exists(p)}
        self._kept = kept
        best = {p for k, p in runner.message_hub.runtime_info.items()
                if k.startswith('best_ckpt') and isinstance(p, str)}
        gone |= getattr(self, '_best', set()) - best
        self._best = best
        self._remove_twins(runner, gone)

    def _write_twin(self, runner, path: str) -> None:
        twin = student_path_for(path)
        if osp.exists(twin) and not twin_written_for(twin, path):
            runner.logger.warning(
                f'StudentCheckpointHook: {twin} exists and was not written by this hook for '
                f'{osp.basename(path)}, so it is left untouched and no student twin is written '
                f'for that checkpoint. Export it with: python tools/export_student.py {path} '
                '--out OTHER_PATH')
            return
        if osp.exists(twin) and osp.getmtime(twin) >= osp.getmtime(path):
            return  # already written (e.g. the checkpoint a run resumed from)
        out = export_student_checkpoint(path, twin, use_ema=self.use_ema, twin=True)
        runner.logger.info(f'student-only checkpoint for plain mmdet: {out}')

    @staticmethod
    def _remove_twins(runner, sources: Set[str]) -> None:
        for source in sorted(sources):
            twin = student_path_for(source)
            if osp.exists(source) or not osp.isfile(twin) or not twin_written_for(twin, source):
                continue
            os.remove(twin)
            runner.logger.info(f'StudentCheckpointHook: removed {twin}, the twin of '
                               f'{osp.basename(source)} that mmengine removed '
                               '(max_keep_ckpts / a new best checkpoint)')
