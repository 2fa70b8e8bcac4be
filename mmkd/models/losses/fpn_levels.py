"""Per-level plumbing the FPN feature losses share (PKD, CWD, FGD, MGD): the neck channels and
the used levels, resolved in ``setup``, and student/teacher maps paired level by level in
``forward``."""
from __future__ import annotations

from typing import Iterator, List, Optional, Sequence, Tuple

import torch.nn.functional as F
from torch import Tensor, nn

from ..distill_context import DistillContext
from .feature_imitation import align_teacher_feat, neck_channels


def resolve_neck_channels(loss_name: str, student: nn.Module, teacher: nn.Module,
                          student_channels: Optional[int],
                          teacher_channels: Optional[int]) -> Tuple[int, int]:
    """(C_s, C_t): the given values, else the necks' ``out_channels``; raises if unknown."""
    cs = student_channels or neck_channels(student)
    ct = teacher_channels or neck_channels(teacher)
    if cs is None or ct is None:
        raise ValueError(f'{loss_name} could not read the neck channels of the models; set '
                         'student_channels and teacher_channels in its config.')
    return int(cs), int(ct)


def resolve_levels(loss_name: str, student: nn.Module,
                   levels: Optional[Sequence[int]]) -> List[int]:
    """The FPN level indices a loss uses: ``levels``, else all ``neck.num_outs`` levels."""
    if levels is not None:
        out = [int(l) for l in levels]
        if not out or min(out) < 0 or len(set(out)) != len(out):
            raise ValueError(f'{loss_name}: levels must be distinct non-negative FPN level '
                             f'indices, got {list(levels)}.')
        return out
    num_outs = getattr(getattr(student, 'neck', None), 'num_outs', None)
    if num_outs is None:
        raise ValueError(f'{loss_name} could not read the number of FPN levels '
                         '(student.neck.num_outs); set levels=[...] in its config.')
    return list(range(int(num_outs)))


def level_pairs(loss_name: str, ctx: DistillContext, levels: Optional[Sequence[int]],
                adapters: Optional[nn.ModuleList] = None, fix: str = '',
                resize_student: bool = False
                ) -> Iterator[Tuple[int, int, Tensor, Tensor]]:
    """Yield ``(j, level, s, t)`` for the used levels: j indexes the per-level modules, ``s`` is
    the (B, C, H, W) student map (through ``adapters[j]`` when given) and ``t`` the detached
    (B, C, H, W) teacher map, cropped to the student's size when it is larger only by padding.
    With ``resize_student`` a student map of another size is instead resized to the teacher's
    (bilinear, ``align_corners=False``), as MMRazor's PKD (``resize_stu``) does.

    Raises when the channel counts still differ; ``fix`` says how to configure the loss."""
    s_feats, t_feats = ctx.student_feats, ctx.teacher_feats
    if len(s_feats) != len(t_feats):
        raise ValueError(f'{loss_name}: the student has {len(s_feats)} FPN levels and the '
                         f'teacher {len(t_feats)}; set levels=[...] to the shared ones.')
    used = list(levels) if levels is not None else list(range(len(s_feats)))
    if max(used) >= len(s_feats):
        raise ValueError(f'{loss_name}: level {max(used)} requested but the necks have only '
                         f'{len(s_feats)} levels; fix levels=[...].')
    for j, lvl in enumerate(used):
        s = s_feats[lvl] if adapters is None else adapters[j](s_feats[lvl])
        if resize_student and s.shape[-2:] != t_feats[lvl].shape[-2:]:
            s = F.interpolate(s, size=tuple(t_feats[lvl].shape[-2:]), mode='bilinear',
                              align_corners=False)
        t = align_teacher_feat(s, t_feats[lvl], lvl).detach()
        if s.shape[1] != t.shape[1]:
            raise ValueError(f'{loss_name}: {s.shape[1]} student vs {t.shape[1]} teacher '
                             f'channels at FPN level {lvl}; {fix or "add a channel adapter"}.')
        yield j, lvl, s, t


def conv1x1_adapters(cs: int, ct: int, n: int) -> nn.ModuleList:
    """``n`` per-level 1x1 convs mapping C_s student channels to C_t teacher channels."""
    return nn.ModuleList(nn.Conv2d(cs, ct, kernel_size=1) for _ in range(n))
