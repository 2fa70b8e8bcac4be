"""FGD: focal (GT foreground/background, attention-weighted) and global distillation."""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import Tensor, nn

from ..distill_context import DistillContext
from ..utils.box_mask import paint_batch_masks, paint_inclusive_cells
from .base import BaseDistillLoss, require_finite
from .fpn_levels import conv1x1_adapters, level_pairs, resolve_levels, resolve_neck_channels

#: FGDLoss ``mask_rule`` values: the released code's rule (default) and mmkd's cover rule.
FGD_MASK_RULES = ('released', 'cover')


def fgd_masks_released(batch_boxes: Sequence[Tensor], feat: Tensor,
                       img_shapes: Sequence[Sequence[int]]) -> Tuple[Tensor, Tensor]:
    """FGD's foreground and background masks by the released code's rule.

    Per image, with (h, w) its valid ``img_shape`` and (H, W) the map size:

    * a box is scaled to the map by the image shape, not by the padded batch size:
      ``x' = x / w * W``, ``y' = y / h * H``;
    * it covers rows ``floor(y1') .. ceil(y2')`` and columns ``floor(x1') .. ceil(x2')``, both
      ends **inclusive** (cut at the map edge), and paints ``1 / ((dh + 1) (dw + 1))`` on them,
      with ``dh = ceil(y2') - floor(y1')`` and ``dw`` likewise (counts before the cut);
    * where boxes overlap, the larger value wins;
    * the background is 1 on the cells no box covers, divided by its sum over the image (an image
      whose map is entirely covered keeps a zero background).

    Because boxes are scaled by the valid image, an image padded into a larger batch gets the
    same masks as the unpadded image (the release's behaviour: the padded area is stretched over).

    Args:
        batch_boxes: B tensors (N_i, 4) ``x1, y1, x2, y2`` in input pixels.
        feat: (B, C, H, W) map; only its shape and device are used.
        img_shapes: B ``(h, w)`` valid image sizes (``img_shape`` of each data sample).

    Returns:
        ``(fg, bg)``, each (B, H, W) float32; an image without boxes has fg = 0 and
        bg = 1 / (H*W).
    """
    h, w = int(feat.shape[-2]), int(feat.shape[-1])
    fgs = []
    for boxes, shape in zip(batch_boxes, img_shapes):
        b = boxes.detach().float().to(feat.device)
        ih, iw = int(shape[0]), int(shape[1])
        x1, x2 = (b[:, 0] / iw * w).floor(), (b[:, 2] / iw * w).ceil()
        y1, y2 = (b[:, 1] / ih * h).floor(), (b[:, 3] / ih * h).ceil()
        values = 1.0 / ((y2 + 1 - y1) * (x2 + 1 - x1))
        fgs.append(paint_inclusive_cells(y1, y2, x1, x2, (h, w), values))
    fg = torch.stack(fgs) if fgs else feat.new_zeros((0, h, w), dtype=torch.float32)
    bg = (fg <= 0).float()
    bg = bg / bg.sum(dim=(1, 2), keepdim=True).clamp(min=1.0)
    return fg, bg


def fgd_masks(batch_boxes: Sequence[Tensor], feat: Tensor,
              input_hw: Sequence[int]) -> Tuple[Tensor, Tensor]:
    """FGD's scaled foreground and normalised background masks by mmkd's cover rule
    (``FGDLoss(mask_rule='cover')``; the released rule is :func:`fgd_masks_released`).

    A box covers the cells it overlaps (:func:`~mmkd.models.utils.paint_box_mask`'s rule,
    stride = input size / map size), and paints ``1 / (h_cells * w_cells)`` on them, its own cell
    count; where boxes overlap, the larger value (the smaller box) wins. The background is 1 on
    the cells no box covers, divided by their number per image.

    Args:
        batch_boxes: B tensors (N_i, 4) ``x1, y1, x2, y2`` in batch-input pixels.
        feat: (B, C, H, W) map; only its shape and device are used.
        input_hw: (H_in, W_in) padded batch input size.

    Returns:
        ``(fg, bg)``, each (B, H, W) float; an image without boxes has fg = 0 and bg = 1 / (H*W).
    """
    h, w = feat.shape[-2:]
    sy, sx = input_hw[0] / h, input_hw[1] / w
    values = []
    for boxes in batch_boxes:
        b = boxes.detach().float().to(feat.device)
        if b.numel() == 0:
            values.append(b.new_zeros(0))
            continue
        # the cell span of paint_box_mask: floor(start) .. max(ceil(end), floor(start) + 1)
        x1 = (b[:, 0] / sx).floor().clamp(0, w - 1)
        y1 = (b[:, 1] / sy).floor().clamp(0, h - 1)
        x2 = torch.maximum((b[:, 2] / sx).ceil().clamp(max=w), x1 + 1)
        y2 = torch.maximum((b[:, 3] / sy).ceil().clamp(max=h), y1 + 1)
        values.append(1.0 / ((x2 - x1) * (y2 - y1)))
    fg = paint_batch_masks(batch_boxes, feat, input_hw, values)
    bg = (fg <= 0).float()
    bg = bg / bg.sum(dim=(1, 2), keepdim=True).clamp(min=1.0)
    return fg, bg


def fgd_attention(feat: Tensor, temperature: float) -> Tuple[Tensor, Tensor]:
    """FGD's spatial and channel attention of a (B, C, H, W) map.

    Returns:
        ``(spatial, channel)``: (B, H, W) ``H*W * softmax_hw(mean_c |F| / T)`` and (B, C)
        ``C * softmax_c(mean_hw |F| / T)``.
    """
    b, c, h, w = feat.shape
    a = feat.float().abs()
    spatial = (h * w) * F.softmax(a.mean(dim=1).reshape(b, -1) / temperature, dim=1)
    channel = c * F.softmax(a.mean(dim=(2, 3)) / temperature, dim=1)
    return spatial.reshape(b, h, w), channel


class GlobalContextBlock(nn.Module):
    """GcBlock-style relation module: ``x + transform(context(x))``.

    context: softmax over the H*W positions of a 1x1 conv C -> 1, used to pool x into (B, C, 1, 1);
    transform: 1x1 conv C -> C/2, LayerNorm over (C/2, 1, 1), ReLU, 1x1 conv C/2 -> C. The last
    conv starts at zero, so the block starts as the identity.

    Args:
        channels: C.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        mid = max(channels // 2, 1)
        self.context_conv = nn.Conv2d(channels, 1, kernel_size=1)
        self.transform = nn.Sequential(
            nn.Conv2d(channels, mid, kernel_size=1), nn.LayerNorm([mid, 1, 1]), nn.ReLU(),
            nn.Conv2d(mid, channels, kernel_size=1))
        nn.init.kaiming_normal_(self.context_conv.weight, mode='fan_in', nonlinearity='relu')
        nn.init.zeros_(self.context_conv.bias)
        nn.init.zeros_(self.transform[-1].weight)
        nn.init.zeros_(self.transform[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        b, c, h, w = x.shape
        weights = F.softmax(self.context_conv(x).reshape(b, 1, h * w), dim=2)  # (B, 1, HW)
        context = torch.bmm(x.reshape(b, c, h * w), weights.transpose(1, 2))  # (B, C, 1)
        return x + self.transform(context.reshape(b, c, 1, 1))


@MODELS.register_module()
class FGDLoss(BaseDistillLoss):
    """FGD (Yang et al., CVPR 2022) on FPN maps.

    Per used level, with S the (B, C, H, W) student map (through a 1x1 conv to the teacher's
    channels when the counts differ), T the teacher map, M_fg / M_bg by ``mask_rule``,
    (A_s, A_c) = :func:`fgd_attention` of T and (A'_s, A'_c) of S::

        fg     = sum_{b,c,h,w} M_fg A_s A_c (S - T)**2 / B
        bg     = sum_{b,c,h,w} M_bg A_s A_c (S - T)**2 / B
        attn   = (sum |A'_c - A_c| + sum |A'_s - A_s|) / B
        global = sum (G_s(S) - G_t(T))**2 / B

    G_s and G_t are two :class:`GlobalContextBlock` per level (trained; G_t only sees the
    detached teacher map). Returns the dict ``{'fg': alpha * sum_l fg, 'bg': beta * ...,
    'attn': gamma * ..., 'global': lambda * ...}``; the distiller logs them as
    ``<name>_fg`` etc. and multiplies each by ``loss_weight``.

    Args:
        temperature: T of the attentions (0.5 in the paper).
        alpha_fg / beta_bg / gamma_attn / lambda_global: the paper's alpha, beta, gamma, lambda.
        levels: FPN level indices used; all levels when None.
        student_channels / teacher_channels: neck channels; read from the models when None.
        mask_rule: how GT boxes become M_fg / M_bg. ``'released'`` (default, the official
            code): :func:`fgd_masks_released`, boxes scaled by ``img_shape``, inclusive
            floor..ceil cells. ``'cover'`` (mmkd's own): :func:`fgd_masks`, boxes scaled by the
            padded batch size, exactly the cells they overlap.
    """

    def __init__(self, temperature: float = 0.5, alpha_fg: float = 1e-3, beta_bg: float = 5e-4,
                 gamma_attn: float = 5e-4, lambda_global: float = 5e-6,
                 levels: Optional[Sequence[int]] = None, student_channels: Optional[int] = None,
                 teacher_channels: Optional[int] = None, mask_rule: str = 'released',
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if not temperature > 0:
            raise ValueError(f'FGDLoss temperature must be > 0, got {temperature}')
        if mask_rule not in FGD_MASK_RULES:
            raise ValueError(f'FGDLoss mask_rule must be one of {FGD_MASK_RULES}, got '
                             f'{mask_rule!r}')
        self.mask_rule = mask_rule
        self.temperature = float(temperature)
        self.alpha_fg, self.beta_bg = float(alpha_fg), float(beta_bg)
        self.gamma_attn, self.lambda_global = float(gamma_attn), float(lambda_global)
        self.levels = None if levels is None else list(levels)
        self.student_channels, self.teacher_channels = student_channels, teacher_channels
        self.align: Optional[nn.ModuleList] = None
        self.gc_student: Optional[nn.ModuleList] = None
        self.gc_teacher: Optional[nn.ModuleList] = None

    def setup(self, student: nn.Module, teacher: nn.Module) -> None:
        """Build, per used level, the 1x1 alignment (channels differ) and the two GC blocks."""
        super().setup(student, teacher)
        cs, ct = resolve_neck_channels('FGDLoss', student, teacher, self.student_channels,
                                       self.teacher_channels)
        self.student_channels, self.teacher_channels = cs, ct
        self.levels = resolve_levels('FGDLoss', student, self.levels)
        n = len(self.levels)
        self.align = conv1x1_adapters(cs, ct, n) if cs != ct else None
        self.gc_student = nn.ModuleList(GlobalContextBlock(ct) for _ in range(n))
        self.gc_teacher = nn.ModuleList(GlobalContextBlock(ct) for _ in range(n))

    def forward(self, ctx: DistillContext) -> Dict[str, Tensor]:
        """The four weighted terms, each summed over the used levels (scalars)."""
        if self.gc_student is None or self.gc_teacher is None:
            raise RuntimeError('FGDLoss.setup(student, teacher) was not called; it builds the '
                               'global-context blocks (DistillDetector calls it).')
        zero = ctx.student_feats[0].new_zeros((), dtype=torch.float32)
        fg_sum, bg_sum, attn_sum, glob_sum = zero, zero, zero, zero
        boxes = ctx.gt_bboxes
        img_shapes = [tuple(ds.img_shape[:2]) for ds in ctx.data_samples]
        fix = ('set student_channels/teacher_channels to the neck channels so setup builds the '
               'alignment')
        for j, _, s, t in level_pairs('FGDLoss', ctx, self.levels, self.align, fix=fix):
            b = s.shape[0]
            s32, t32 = s.float(), t.float()
            if self.mask_rule == 'released':
                fg, bg = fgd_masks_released(boxes, s, img_shapes)
            else:
                fg, bg = fgd_masks(boxes, s, ctx.batch_input_shape)
            sp_t, ch_t = fgd_attention(t32, self.temperature)
            sp_s, ch_s = fgd_attention(s32, self.temperature)
            weighted = (s32 - t32).pow(2) * sp_t[:, None] * ch_t[:, :, None, None]
            fg_sum = fg_sum + (weighted * fg[:, None]).sum() / b
            bg_sum = bg_sum + (weighted * bg[:, None]).sum() / b
            attn_sum = attn_sum + ((ch_s - ch_t).abs().sum() + (sp_s - sp_t).abs().sum()) / b
            rel = self.gc_student[j](s32) - self.gc_teacher[j](t32)
            glob_sum = glob_sum + rel.pow(2).sum() / b
        out = {'fg': self.alpha_fg * fg_sum, 'bg': self.beta_bg * bg_sum,
               'attn': self.gamma_attn * attn_sum, 'global': self.lambda_global * glob_sum}
        for k, v in out.items():
            require_finite(v, f'FGDLoss {k} term')
        return out
