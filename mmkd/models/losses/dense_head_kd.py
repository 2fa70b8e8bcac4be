"""Logit and box-delta distillation for anchor-based dense heads (RetinaNet-style)."""
from __future__ import annotations

from typing import Dict

import torch
from mmdet.registry import MODELS
from torch import Tensor

from ..distill_context import DistillContext
from .base import BaseDistillLoss, require_finite
from .functional import soft_label_kl


@MODELS.register_module()
class DenseHeadKDLoss(BaseDistillLoss):
    """Distil a dense head anchor by anchor (teacher and student need the same anchors):

    * ``cls``: softmax KL(teacher || student) over the classes, temperature T, averaged over
      the non-ignored anchors and the classes (PyTorch ``kl_div`` 'mean', as DSIG's R18 config);
    * ``reg``: L1 between student and teacher box deltas on the positive anchors, divided by
      their number.

    Args:
        cls_weight / reg_weight: weights of the two terms (0 disables one).
        temperature: T of the logit term.
    """

    needs = frozenset({'student_dense_targets', 'teacher_head'})
    term_weight_keys = {'cls': 'cls_weight', 'reg': 'reg_weight'}

    def __init__(self, cls_weight: float = 1.0, reg_weight: float = 1.0,
                 temperature: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.cls_weight, self.reg_weight = float(cls_weight), float(reg_weight)
        self.temperature = float(temperature)

    def forward(self, ctx: DistillContext) -> Dict[str, Tensor]:
        dense = ctx.student_dense
        t_cls, t_reg = ctx.teacher_head_outs[:2]
        c = dense.num_classes
        s_rows, t_rows, s_box, t_box = [], [], [], []
        dense.check_same_anchors(dense.cls_scores, t_cls, 'DenseHeadKDLoss')
        for l in range(len(dense.labels)):
            valid = dense.label_weights[l] > 0  # (B, N_l)
            pos = valid & (dense.labels[l] >= 0) & (dense.labels[l] < c)
            s_rows.append(dense.flat_logits(dense.cls_scores[l], c)[valid])
            t_rows.append(dense.flat_logits(t_cls[l], c)[valid])
            s_box.append(dense.flat_logits(dense.bbox_preds[l], 4)[pos])
            t_box.append(dense.flat_logits(t_reg[l], 4)[pos])
        out = {}
        if self.cls_weight:
            s, t = torch.cat(s_rows), torch.cat(t_rows)
            out['cls'] = self.cls_weight * soft_label_kl(s, t, self.temperature, 'classmean')
        if self.reg_weight:
            s, t = torch.cat(s_box), torch.cat(t_box)
            out['reg'] = self.reg_weight * (s - t.detach()).abs().sum() / max(s.shape[0], 1)
        return {k: require_finite(v, f'DenseHeadKDLoss {k}') for k, v in out.items()}
