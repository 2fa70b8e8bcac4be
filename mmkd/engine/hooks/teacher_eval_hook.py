"""Evaluate the teacher once before training, to catch a wrong or badly loaded checkpoint."""
from __future__ import annotations

from typing import Optional

from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper


@HOOKS.register_module()
class TeacherEvalHook(Hook):
    """Run the validation set through the teacher once, before the first epoch.

    The metrics are logged as ``teacher/<metric>`` and stored in the message hub under
    ``teacher_metrics``. Opt-in, because it costs one validation pass.

    Args:
        min_score: if given, training stops with an error when ``metric`` is below it (a
            teacher at ~0 mAP means the wrong checkpoint or classes).
        metric: the metric key compared with ``min_score``.
    """

    priority = 'LOW'

    def __init__(self, min_score: Optional[float] = None,
                 metric: str = 'coco/bbox_mAP') -> None:
        self.min_score, self.metric = min_score, metric

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(model, 'predict_with_teacher'):
            raise TypeError('TeacherEvalHook needs a DistillDetector model')
        loop = runner.val_loop
        model.eval()
        model.predict_with_teacher = True
        try:
            for data_batch in loop.dataloader:
                outputs = runner.model.val_step(data_batch)
                loop.evaluator.process(data_samples=outputs, data_batch=data_batch)
            metrics = loop.evaluator.evaluate(len(loop.dataloader.dataset))
        finally:
            model.predict_with_teacher = False
            model.train()
        runner.message_hub.update_info('teacher_metrics', metrics)
        runner.logger.info('teacher evaluation before training: ' + ', '.join(
            f'teacher/{k}: {v:.4f}' if isinstance(v, float) else f'teacher/{k}: {v}'
            for k, v in metrics.items()))
        if self.min_score is not None:
            score = metrics.get(self.metric)
            if score is None or score < self.min_score:
                raise RuntimeError(
                    f'teacher {self.metric} = {score} is below min_score={self.min_score}: '
                    'check teacher_ckpt, the teacher config and its num_classes.')
