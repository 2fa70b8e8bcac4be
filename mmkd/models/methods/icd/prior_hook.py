"""ICDPriorHook: fit ICD's fake-instance priors on the training annotations before training."""
from __future__ import annotations

from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from .icd_loss import InstanceConditionalDistillLoss


@HOOKS.register_module()
class ICDPriorHook(Hook):
    """Measure class frequencies and per-class box sizes of the training set for every ICD
    loss of the model (each rank reads the same annotations, so ranks agree)."""

    priority = 'NORMAL'

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        losses = [m for m in model.modules() if isinstance(m, InstanceConditionalDistillLoss)]
        if not losses:
            return
        dataset = runner.train_dataloader.dataset
        for loss in losses:
            n = loss.priors.fit(dataset)
            if n == 0:
                print_log('ICDPriorHook: no boxes in the training set; fake instances keep '
                          'the uniform priors', logger='current', level=30)
        print_log(f'ICDPriorHook: fake-instance priors fitted on {n} training boxes',
                  logger='current')
