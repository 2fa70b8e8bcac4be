"""Soft-label KL on the R-CNN classifier, teacher and student scoring the same RoIs."""
from __future__ import annotations

from mmdet.registry import MODELS
from torch import Tensor

from ..distill_context import DistillContext
from .base import BaseDistillLoss, require_finite
from .functional import soft_label_kl


@MODELS.register_module()
class RoIClsKLLoss(BaseDistillLoss):
    """KL(teacher || student) of the RoI classification distributions.

    The RoIs are the student's own sampled RoIs of this step (positives only by default). The
    student logits are taken from the student's forward; the teacher's box head scores the same
    boxes on its own FPN (RoIAlign through the teacher's extractor).

    Args:
        temperature: softmax temperature T; the KL is multiplied by T**2.
        rois: ``'pos'`` (positive sampled RoIs) or ``'all'`` sampled RoIs.
        reduction: see :func:`~mmkd.models.losses.functional.soft_label_kl`.
    """

    needs = frozenset({'student_rois', 'teacher_roi_head'})

    def __init__(self, temperature: float = 1.0, rois: str = 'pos',
                 reduction: str = 'batchmean', **kwargs) -> None:
        super().__init__(**kwargs)
        if rois not in ('pos', 'all'):
            raise ValueError(f"rois must be 'pos' or 'all', got {rois!r}")
        self.temperature, self.rois, self.reduction = float(temperature), rois, reduction

    def forward(self, ctx: DistillContext) -> Tensor:
        rec = ctx.student_rois
        if rec is None:
            raise RuntimeError('RoIClsKLLoss: the student RoI step was not recorded')
        idx = rec.pos_index if self.rois == 'pos' else None
        rois = rec.rois if idx is None else rec.rois[idx]
        s_logits = rec.cls_score if idx is None else rec.cls_score[idx]
        if rois.shape[0] == 0:  # no positives in this batch (e.g. only empty images)
            return self.zero(rec.cls_score) + rec.cls_score.sum() * 0.0
        t_logits = ctx.teacher_roi_forward(rois)['cls_score']
        loss = soft_label_kl(s_logits, t_logits, self.temperature, self.reduction)
        return require_finite(loss, 'RoIClsKLLoss')
