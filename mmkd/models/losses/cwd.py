"""CWD: channel-wise distillation, a KL divergence between per-channel spatial distributions."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from mmdet.registry import MODELS
from torch import Tensor, nn

from ..distill_context import DistillContext
from .base import BaseDistillLoss, require_finite
from .fpn_levels import conv1x1_adapters, level_pairs, resolve_levels, resolve_neck_channels
from .functional import soft_label_kl


@MODELS.register_module()
class ChannelWiseDistillLoss(BaseDistillLoss):
    """CWD (Shu et al., ICCV 2021) on FPN maps.

    Each channel of a (B, C, H, W) map becomes a distribution over its H*W positions,
    ``p = softmax(x / tau)``. Per used level l, with S_l the student map (through a 1x1 adapter
    when ``adapter='conv1x1'``) and T_l the teacher map::

        L_l = tau**2 / (B * C) * sum_{b, c} KL(p_T[b, c] || p_S[b, c])

    and the loss is ``sum_l L_l`` (the distiller multiplies by ``loss_weight``). It is 0 when the
    student equals the teacher, and invariant to adding a per-(b, c) constant to either map.

    Channel c of the student is compared with channel c of the teacher, so different channel
    counts need ``adapter='conv1x1'``; without it :meth:`setup` raises.

    Args:
        tau: softmax temperature.
        levels: FPN level indices used; all levels when None.
        adapter: None or ``'conv1x1'``.
        student_channels / teacher_channels: neck channels; read from the models when None.
    """

    def __init__(self, tau: float = 1.0, levels: Optional[Sequence[int]] = None,
                 adapter: Optional[str] = None, student_channels: Optional[int] = None,
                 teacher_channels: Optional[int] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if not tau > 0:
            raise ValueError(f'ChannelWiseDistillLoss tau must be > 0, got {tau}')
        if adapter not in (None, 'conv1x1'):
            raise ValueError("ChannelWiseDistillLoss adapter must be None or 'conv1x1', got "
                             f'{adapter!r}')
        self.tau = float(tau)
        self.levels = None if levels is None else list(levels)
        self.adapter_type = adapter
        self.student_channels, self.teacher_channels = student_channels, teacher_channels
        self.adapters: Optional[nn.ModuleList] = None

    def setup(self, student: nn.Module, teacher: nn.Module) -> None:
        """Check the channel counts and build the adapters (one per used level) if asked."""
        super().setup(student, teacher)
        name = 'ChannelWiseDistillLoss'
        cs, ct = resolve_neck_channels(name, student, teacher, self.student_channels,
                                       self.teacher_channels)
        if cs != ct and self.adapter_type is None:
            raise ValueError(f'{name}: student FPN has {cs} channels and teacher FPN {ct}; '
                             "channel-wise distributions are paired by channel: set "
                             f"adapter='conv1x1' in the {name} config.")
        self.student_channels, self.teacher_channels = cs, ct
        self.levels = resolve_levels(name, student, self.levels)
        if self.adapter_type == 'conv1x1':
            self.adapters = conv1x1_adapters(cs, ct, len(self.levels))

    def forward(self, ctx: DistillContext) -> Tensor:
        """Sum over the used levels of the per-channel KL, times tau**2, / (B * C) (scalar)."""
        total = ctx.student_feats[0].new_zeros((), dtype=torch.float32)
        for j, _, s, t in level_pairs('ChannelWiseDistillLoss', ctx, self.levels, self.adapters,
                                      fix="set adapter='conv1x1'"):
            hw = s.shape[2] * s.shape[3]
            # rows = (b, c) pairs, "classes" = positions: batchmean divides by B * C
            total = total + soft_label_kl(s.reshape(-1, hw), t.reshape(-1, hw), self.tau,
                                          reduction='batchmean')
        return require_finite(total, 'ChannelWiseDistillLoss')
