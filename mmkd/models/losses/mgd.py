"""MGD: masked generative distillation (generate the teacher's FPN map from a masked student's)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from mmdet.registry import MODELS
from torch import Tensor, nn

from ..distill_context import DistillContext
from .base import BaseDistillLoss, require_finite
from .fpn_levels import conv1x1_adapters, level_pairs, resolve_levels, resolve_neck_channels


def generation_block(channels: int) -> nn.Sequential:
    """MGD's generator: conv3x3 -> ReLU -> conv3x3, ``channels`` in and out."""
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(channels, channels, 3, padding=1))


def random_keep_mask(feat: Tensor, mask_ratio: float) -> Tensor:
    """(B, 1, H, W) float mask, 0 at a random ``mask_ratio`` share of positions, else 1.

    The released rule: draw ``u = torch.rand(B, 1, H, W)`` and zero the positions where
    ``u > 1 - mask_ratio``. One mask value per position is shared by all channels. ``u`` comes
    from torch's global RNG on ``feat``'s device, so runs seeded with ``torch.manual_seed``
    repeat (the realisation depends on the RNG state and device; the distribution does not).
    """
    b, _, h, w = feat.shape
    u = torch.rand((b, 1, h, w), device=feat.device)
    return (u <= 1.0 - mask_ratio).to(feat.dtype)


@MODELS.register_module()
class MGDLoss(BaseDistillLoss):
    """MGD (Yang et al., ECCV 2022) on FPN maps.

    Per used level l, with S_l the (B, C_s, H, W) student map, A_l a 1x1 conv C_s -> C_t (only
    when the channel counts differ), M a random (B, 1, H, W) 0/1 mask with a share
    ``mask_ratio`` of zeros, G_l the generation block (conv3x3-ReLU-conv3x3 on C_t channels)
    and T_l the (B, C_t, H, W) teacher map::

        L_l = sum((G_l(A_l(S_l) * M) - T_l)**2) / B

    and the loss is ``sum_l L_l``. The paper's alpha_mgd is the ``loss_weight``. M is drawn by
    :func:`random_keep_mask` each step, unless :meth:`forward` is given the masks.

    Args:
        mask_ratio: share of masked positions (the paper's lambda_mgd), in [0, 1).
        levels: FPN level indices used; all levels when None.
        student_channels / teacher_channels: neck channels; read from the models when None.
    """

    def __init__(self, mask_ratio: float = 0.65, levels: Optional[Sequence[int]] = None,
                 student_channels: Optional[int] = None, teacher_channels: Optional[int] = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f'MGDLoss mask_ratio (lambda_mgd) must be in [0, 1), got '
                             f'{mask_ratio}')
        self.mask_ratio = float(mask_ratio)
        self.levels = None if levels is None else list(levels)
        self.student_channels, self.teacher_channels = student_channels, teacher_channels
        self.align: Optional[nn.ModuleList] = None
        self.generation: Optional[nn.ModuleList] = None

    def setup(self, student: nn.Module, teacher: nn.Module) -> None:
        """Build, per used level, the 1x1 alignment (channels differ) and the generation block."""
        super().setup(student, teacher)
        cs, ct = resolve_neck_channels('MGDLoss', student, teacher, self.student_channels,
                                       self.teacher_channels)
        self.student_channels, self.teacher_channels = cs, ct
        self.levels = resolve_levels('MGDLoss', student, self.levels)
        self.align = conv1x1_adapters(cs, ct, len(self.levels)) if cs != ct else None
        self.generation = nn.ModuleList(generation_block(ct) for _ in self.levels)

    def forward(self, ctx: DistillContext,
                keep_masks: Optional[Sequence[Tensor]] = None) -> Tensor:
        """Sum over the used levels of ``sum((G(A(S) * M) - T)**2) / B`` (scalar).

        Args:
            ctx: the step's context.
            keep_masks: optional, one (B, 1, H, W) 0/1 mask per used level (in ``levels``
                order) to use instead of drawing M, e.g. to replay another run's draws. The
                distiller never passes it.
        """
        if self.generation is None:
            raise RuntimeError('MGDLoss.setup(student, teacher) was not called; it builds the '
                               'generation blocks (DistillDetector calls it).')
        if keep_masks is not None and len(keep_masks) != len(self.levels):
            raise ValueError(f'MGDLoss: {len(keep_masks)} keep_masks given for '
                             f'{len(self.levels)} levels {self.levels}; pass one per level.')
        total = ctx.student_feats[0].new_zeros((), dtype=torch.float32)
        fix = ('set student_channels/teacher_channels to the neck channels so setup builds the '
               'alignment')
        for j, _, s, t in level_pairs('MGDLoss', ctx, self.levels, self.align, fix=fix):
            if keep_masks is None:
                mask = random_keep_mask(s, self.mask_ratio)
            else:
                mask = keep_masks[j].to(s)
                if mask.shape != (s.shape[0], 1) + tuple(s.shape[-2:]):
                    raise ValueError(f'MGDLoss: keep_masks[{j}] has shape {tuple(mask.shape)}; '
                                     f'level {self.levels[j]} needs '
                                     f'{(s.shape[0], 1) + tuple(s.shape[-2:])}.')
            gen = self.generation[j](s * mask)
            total = total + (gen.float() - t.float()).pow(2).sum() / s.shape[0]
        return require_finite(total, 'MGDLoss')
