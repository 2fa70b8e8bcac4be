"""Loss formulas shared by several distillation methods (plain functions on tensors)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def soft_label_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0,
                  reduction: str = 'batchmean', weight: Tensor | None = None) -> Tensor:
    """Temperature-scaled KL(p_teacher || p_student) over the last dim, times ``T**2``.

    Args:
        student_logits: (N, C) logits.
        teacher_logits: (N, C) logits (no gradient flows into them).
        temperature: T; both distributions are softmax(logits / T).
        reduction: ``'batchmean'``: sum over classes, mean over the N rows (Hinton KD);
            ``'classmean'``: mean over classes, then over rows (the Global-Knowledge code's
            convention, which is the batchmean value divided by C); ``'sum'``; ``'none'``
            (per-row values, shape (N,)).
        weight: optional (N,) per-row weights applied before the reduction.

    Returns:
        A scalar (or (N,) for ``'none'``); 0 when N == 0.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f'student logits {tuple(student_logits.shape)} and teacher logits '
                         f'{tuple(teacher_logits.shape)} differ: the models must have the same '
                         'number of classes for a logit KL loss.')
    t = float(temperature)
    log_ps = F.log_softmax(student_logits.float() / t, dim=-1)
    log_pt = F.log_softmax(teacher_logits.detach().float() / t, dim=-1)
    per_row = (log_pt.exp() * (log_pt - log_ps)).sum(-1) * (t * t)  # (N,)
    if weight is not None:
        per_row = per_row * weight.to(per_row)
    if reduction == 'none':
        return per_row
    if reduction == 'sum':
        return per_row.sum()
    n = max(per_row.shape[0], 1)
    if reduction == 'batchmean':
        return per_row.sum() / n
    if reduction == 'classmean':
        return per_row.sum() / (n * student_logits.shape[-1])
    raise ValueError(f"unknown reduction {reduction!r}; use 'batchmean', 'classmean', 'sum' "
                     "or 'none'")


def masked_sq_error(diff: Tensor, mask: Tensor | None = None) -> Tensor:
    """Normalised squared error of a feature difference, optionally weighted by a pixel mask.

    Args:
        diff: (B, C, H, W) student - teacher features.
        mask: (B, H, W) non-negative pixel weights, or None for all ones.

    Returns:
        ``sum(mask * diff**2) / (C * max(sum(mask), 1))``, i.e. the mean squared error per
        channel and per unit of mask (the plain element mean when ``mask`` is None).
    """
    sq = diff.float().pow(2)
    c = diff.shape[1]
    if mask is None:
        return sq.mean()
    m = mask.to(sq)[:, None]
    return (sq * m).sum() / (c * m.sum().clamp(min=1.0))
