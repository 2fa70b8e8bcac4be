"""LossBalanceHook: keeps the loss-balance state in checkpoints and writes loss_balance.json."""
from __future__ import annotations

import json
import os.path as osp
from typing import Any, Dict, Optional

from mmdet.registry import HOOKS
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from ...utils.atomic import atomic_write

#: File written to the work dir at the end of training.
REPORT_FILE = 'loss_balance.json'
#: Key of the checkpoint's ``meta`` that holds the state.
META_KEY = 'loss_balance'


@HOOKS.register_module()
class LossBalanceHook(Hook):
    """Persistence and output of a DistillDetector's :class:`~mmkd.models.utils.LossBalancer`
    (``balance_report`` / ``auto_balance``); does nothing for a model without one.

    * ``before_save_checkpoint``: the state (plain numbers) goes into
      ``checkpoint['meta']['loss_balance']``; every rank holds the same state, so rank 0's
      checkpoint is complete.
    * ``after_load_checkpoint``: on ``--resume`` the state is restored exactly (also in the
      middle of a measurement window); a plain ``load_from`` starts a new measurement.
    * ``after_train``: logs the final ratios and writes ``<work_dir>/loss_balance.json``
      atomically (rank 0 only). Schema: see :meth:`LossBalancer.report`.

    ``tools/train.py`` adds it to every distillation run.
    """

    priority = 'NORMAL'

    @staticmethod
    def _balancer(runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        return getattr(model, 'loss_balance', None)

    def before_save_checkpoint(self, runner, checkpoint: Dict[str, Any]) -> None:
        balancer = self._balancer(runner)
        if balancer is not None:
            checkpoint.setdefault('meta', {})[META_KEY] = balancer.state_dict()

    def after_load_checkpoint(self, runner, checkpoint: Dict[str, Any]) -> None:
        balancer = self._balancer(runner)
        if balancer is None or not getattr(runner, '_resume', False):
            return
        state: Optional[dict] = (checkpoint.get('meta') or {}).get(META_KEY)
        if state is None:
            return  # the balancer itself reports it at the first step (auto_balance: error)
        balancer.load_state_dict(state)
        print_log(f"loss balance: state restored from the checkpoint (step {state['step']}, "
                  f"{sum(t['decided'] for t in state['terms'].values())} term(s) decided)",
                  logger='current')

    def after_train(self, runner) -> None:
        balancer = self._balancer(runner)
        if balancer is None:
            return
        report = balancer.finish()
        if is_main_process():
            path = osp.join(runner.work_dir, REPORT_FILE)
            with atomic_write(path) as f:
                json.dump(report, f, indent=1, sort_keys=True)
                f.write('\n')
            print_log(f'loss balance: report written to {path}', logger='current')
