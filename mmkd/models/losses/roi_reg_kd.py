"""Box-regression distillation on the R-CNN head: L1 between student and teacher deltas."""
from __future__ import annotations

import torch
from mmdet.registry import MODELS
from torch import Tensor

from ..distill_context import DistillContext
from .base import BaseDistillLoss, require_finite


def class_deltas(bbox_pred: Tensor, labels: Tensor) -> Tensor:
    """(N, 4) deltas of each row's class from (N, 4 * C) class-specific or (N, 4) agnostic ones."""
    if bbox_pred.shape[1] == 4:
        return bbox_pred
    rows = torch.arange(bbox_pred.shape[0], device=bbox_pred.device)
    return bbox_pred.view(bbox_pred.shape[0], -1, 4)[rows, labels.long()]


@MODELS.register_module()
class RoIBoxRegKDLoss(BaseDistillLoss):
    """L1 between the student's and the teacher's box deltas on the student's positive RoIs,
    taking the columns of each RoI's GT class, summed and divided by the number of sampled RoIs
    (DSIG's box-regression KD; a smooth L1 with beta 0 is an L1).
    """

    needs = frozenset({'student_rois', 'teacher_roi_head'})

    def forward(self, ctx: DistillContext) -> Tensor:
        rec = ctx.student_rois
        idx = rec.pos_index
        if idx.numel() == 0:
            return rec.bbox_pred.sum() * 0.0
        t_pred = ctx.teacher_roi_forward(rec.rois[idx])['bbox_pred']
        labels = rec.pos_labels
        diff = class_deltas(rec.bbox_pred[idx], labels) - class_deltas(t_pred, labels).detach()
        return require_finite(diff.abs().sum() / max(rec.rois.shape[0], 1), 'RoIBoxRegKDLoss')
