"""FPN feature imitation: MSE between (adapted) student and teacher neck features."""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from mmdet.registry import MODELS
from torch import Tensor, nn

from ..distill_context import DistillContext
from ..utils.box_mask import paint_batch_masks
from .base import BaseDistillLoss, require_finite
from .functional import masked_sq_error


def neck_channels(model: nn.Module) -> Optional[int]:
    """Output channels of a detector's neck (or backbone when there is no neck), if known."""
    neck = getattr(model, 'neck', None)
    if isinstance(neck, nn.Sequential):
        neck = neck[-1]
    return getattr(neck, 'out_channels', None) if neck is not None else None


def align_teacher_feat(s: Tensor, t: Tensor, level: int) -> Tensor:
    """Crop the teacher map when it is larger only because of extra bottom/right padding."""
    if s.shape[-2:] == t.shape[-2:]:
        return t
    if t.shape[-2] >= s.shape[-2] and t.shape[-1] >= s.shape[-1] and \
            t.shape[-2] - s.shape[-2] <= 1 + t.shape[-2] // 8:
        return t[..., :s.shape[-2], :s.shape[-1]]
    raise ValueError(f'FPN level {level}: student map {tuple(s.shape[-2:])} and teacher map '
                     f'{tuple(t.shape[-2:])} differ in size; teacher and student necks must use '
                     'the same strides (check the FPN start_level / num_outs).')


@MODELS.register_module()
class FeatureImitationLoss(BaseDistillLoss):
    """MSE imitation of the teacher's FPN features, optionally through per-level adapters and
    with separately normalised foreground (GT boxes) and background terms.

    Per level l, with D = A_l(S_l) - T_l of shape (B, C, H, W):

    * no mask: ``L_l = mean(D**2)``;
    * ``fg_mask='gt'``: with M the (B, H, W) GT-box mask,
      ``L_l = fg_weight * sum(M D^2) / (C * max(sum M, 1))
      + bg_weight * sum((1-M) D^2) / (C * max(sum(1-M), 1))``.

    The loss is the mean (``level_reduction='mean'``) or sum of L_l over the chosen levels.

    Args:
        adapter: None, ``'conv1x1'`` or ``'conv3x3'``: a per-level conv on the student features
            (required when channel counts differ).
        student_channels / teacher_channels: neck channels; read from the models when None.
        levels: indices of the FPN levels used; all when None.
        fg_mask: None or ``'gt'``.
        fg_weight / bg_weight: weights of the two masked terms.
        level_reduction: ``'mean'`` or ``'sum'`` over levels.
    """

    def __init__(self, adapter: Optional[str] = None, student_channels: Optional[int] = None,
                 teacher_channels: Optional[int] = None, levels: Optional[Sequence[int]] = None,
                 fg_mask: Optional[str] = None, fg_weight: float = 1.0, bg_weight: float = 1.0,
                 level_reduction: str = 'mean', **kwargs) -> None:
        super().__init__(**kwargs)
        if adapter not in (None, 'conv1x1', 'conv3x3'):
            raise ValueError(f"adapter must be None, 'conv1x1' or 'conv3x3', got {adapter!r}")
        if fg_mask not in (None, 'gt'):
            raise ValueError(f"fg_mask must be None or 'gt', got {fg_mask!r}")
        if level_reduction not in ('mean', 'sum'):
            raise ValueError("level_reduction must be 'mean' or 'sum'")
        self.adapter_type, self.levels = adapter, None if levels is None else list(levels)
        self.student_channels, self.teacher_channels = student_channels, teacher_channels
        self.fg_mask, self.fg_weight, self.bg_weight = fg_mask, float(fg_weight), float(bg_weight)
        self.level_reduction = level_reduction
        self.adapters: Optional[nn.ModuleList] = None

    def setup(self, student: nn.Module, teacher: nn.Module) -> None:
        """Check channel counts and build the adapters (one per used level)."""
        super().setup(student, teacher)
        cs = self.student_channels or neck_channels(student)
        ct = self.teacher_channels or neck_channels(teacher)
        if cs is None or ct is None:
            raise ValueError('FeatureImitationLoss could not read the neck channels; set '
                             'student_channels and teacher_channels.')
        if cs != ct and self.adapter_type is None:
            raise ValueError(f'student FPN has {cs} channels and teacher FPN {ct}: set '
                             "adapter='conv1x1' (or 'conv3x3') in FeatureImitationLoss.")
        self.student_channels, self.teacher_channels = cs, ct
        if self.adapter_type is not None:
            num_outs = getattr(getattr(student, 'neck', None), 'num_outs', None)
            n = len(self.levels) if self.levels is not None else num_outs
            if n is None:
                raise ValueError('FeatureImitationLoss could not read the number of FPN levels; '
                                 'set levels=[...].')
            k = 1 if self.adapter_type == 'conv1x1' else 3
            self.adapters = nn.ModuleList(
                nn.Conv2d(cs, ct, k, padding=k // 2) for _ in range(n))

    def forward(self, ctx: DistillContext) -> Tensor:
        s_feats, t_feats = ctx.student_feats, ctx.teacher_feats
        if len(s_feats) != len(t_feats):
            raise ValueError(f'student has {len(s_feats)} FPN levels and teacher '
                             f'{len(t_feats)}; set levels=[...] to the shared ones.')
        levels = self.levels if self.levels is not None else list(range(len(s_feats)))
        masks_src = ctx.gt_bboxes if self.fg_mask == 'gt' else None
        terms: List[Tensor] = []
        for j, lvl in enumerate(levels):
            s = s_feats[lvl]
            if self.adapters is not None:
                s = self.adapters[j](s)
            t = align_teacher_feat(s, t_feats[lvl], lvl)
            diff = s - t
            if masks_src is None:
                terms.append(masked_sq_error(diff))
                continue
            fg = paint_batch_masks(masks_src, s, ctx.batch_input_shape)
            terms.append(self.fg_weight * masked_sq_error(diff, fg)
                         + self.bg_weight * masked_sq_error(diff, 1.0 - fg))
        total = torch.stack(terms).sum()
        if self.level_reduction == 'mean':
            total = total / len(terms)
        return require_finite(total, 'FeatureImitationLoss')
