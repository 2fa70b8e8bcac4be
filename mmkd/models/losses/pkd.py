"""PKD: FPN imitation after per-channel standardisation (Pearson-correlation distillation)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from mmdet.registry import MODELS
from torch import Tensor, nn

from ..distill_context import DistillContext
from .base import BaseDistillLoss, require_finite
from .fpn_levels import conv1x1_adapters, level_pairs, resolve_levels, resolve_neck_channels


def standardize_per_channel(feat: Tensor, eps: float = 1e-6) -> Tensor:
    """Standardise each channel over the batch and the map (dims N, H, W).

    Args:
        feat: (N, C, H, W).
        eps: added to the standard deviation.

    Returns:
        (N, C, H, W) ``(x - mean_c) / (std_c + eps)`` with the unbiased std over the N*H*W
        values of channel c (the biased one when there is a single value, giving zeros).
    """
    x = feat.float()
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    centred = x - mean
    var = centred.pow(2).sum(dim=(0, 2, 3), keepdim=True) / max(n - 1, 1)
    return centred / (var.sqrt() + eps)


@MODELS.register_module()
class PKDLoss(BaseDistillLoss):
    """PKD (Cao et al., NeurIPS 2022): MSE between per-channel standardised FPN maps.

    Per used level l, with S_l the (B, C, H, W) student map (through a 1x1 adapter when
    ``adapter='conv1x1'``) and T_l the teacher map, both standardised per channel over
    (B, H, W) by :func:`standardize_per_channel`::

        L_l = mean((norm(S_l) - norm(T_l))**2) / 2        # = (1 - Pearson r) averaged over c

    and the loss is ``sum_l L_l`` (the distiller multiplies by ``loss_weight``). The result is
    invariant to a per-channel positive scale and shift of either model's features.

    Standardisation pairs channel c of the student with channel c of the teacher, so the channel
    counts must match: with different counts set ``adapter='conv1x1'`` (a learned per-level
    1x1 conv on the student, C_s -> C_t); without it :meth:`setup` raises.

    Args:
        levels: FPN level indices used; all levels when None.
        adapter: None or ``'conv1x1'``.
        student_channels / teacher_channels: neck channels; read from the models when None.
        eps: added to the per-channel std.
        resize_student: on a student/teacher map size mismatch, resize the student map to the
            teacher's (bilinear), as MMRazor's ``PKDLoss(resize_stu=True)`` does. False (the
            default) crops a teacher map that is larger only by padding and raises on any other
            mismatch. No effect when the sizes match (every shipped pair).
    """

    def __init__(self, levels: Optional[Sequence[int]] = None, adapter: Optional[str] = None,
                 student_channels: Optional[int] = None, teacher_channels: Optional[int] = None,
                 eps: float = 1e-6, resize_student: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        if adapter not in (None, 'conv1x1'):
            raise ValueError(f"PKDLoss adapter must be None or 'conv1x1', got {adapter!r}")
        self.levels = None if levels is None else list(levels)
        self.adapter_type = adapter
        self.student_channels, self.teacher_channels = student_channels, teacher_channels
        self.eps = float(eps)
        self.resize_student = bool(resize_student)
        self.adapters: Optional[nn.ModuleList] = None

    def setup(self, student: nn.Module, teacher: nn.Module) -> None:
        """Check the channel counts and build the adapters (one per used level) if asked."""
        super().setup(student, teacher)
        cs, ct = resolve_neck_channels('PKDLoss', student, teacher, self.student_channels,
                                       self.teacher_channels)
        if cs != ct and self.adapter_type is None:
            raise ValueError(f'PKDLoss: student FPN has {cs} channels and teacher FPN {ct}; '
                             "per-channel correlation needs matching channels: set "
                             "adapter='conv1x1' in the PKDLoss config.")
        self.student_channels, self.teacher_channels = cs, ct
        self.levels = resolve_levels('PKDLoss', student, self.levels)
        if self.adapter_type == 'conv1x1':
            self.adapters = conv1x1_adapters(cs, ct, len(self.levels))

    def forward(self, ctx: DistillContext) -> Tensor:
        """Sum over the used levels of ``mean((norm(S) - norm(T))**2) / 2`` (scalar)."""
        total = ctx.student_feats[0].new_zeros((), dtype=torch.float32)
        for j, _, s, t in level_pairs('PKDLoss', ctx, self.levels, self.adapters,
                                      fix="set adapter='conv1x1'",
                                      resize_student=self.resize_student):
            ns = standardize_per_channel(s, self.eps)
            nt = standardize_per_channel(t, self.eps)
            total = total + (ns - nt).pow(2).mean() / 2
        return require_finite(total, 'PKDLoss')
