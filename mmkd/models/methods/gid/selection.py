"""General Instance Selection (GISM) of GID (Dai et al., CVPR 2021)."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from mmcv.ops import nms
from torch import Tensor


def class_probs(logits: Tensor, activation: str) -> Tensor:
    """Per-class foreground probabilities: sigmoid of each logit, or the softmax without its
    last (background) column."""
    if activation == 'sigmoid':
        return logits.float().sigmoid()
    return F.softmax(logits.float(), dim=-1)[:, :-1]


def gi_scores(teacher_logits: Tensor, student_logits: Tensor, mode: str = 'diff_max',
              activation: str = 'sigmoid') -> Tuple[Tensor, Tensor]:
    """GI score of every candidate and whether the teacher is the more confident model.

    Args:
        teacher_logits / student_logits: (N, C) (sigmoid heads) or (N, C + 1) (softmax heads).
        mode: ``'diff_max'`` (the released code: |max p_t - max p_s|) or ``'max_diff'`` (the
            paper as mmkd reads it: max over classes of |p_t - p_s|).

    Returns:
        ``(score, teacher_wins)``: (N,) GI scores and (N,) bool, True where the teacher's
        maximum class probability is higher (its box is then used).
    """
    pt = class_probs(teacher_logits, activation)
    ps = class_probs(student_logits, activation)
    mt, ms = pt.max(dim=1).values, ps.max(dim=1).values
    if mode == 'max_diff':
        score = (pt - ps).abs().max(dim=1).values
    elif mode == 'diff_max':
        score = (mt - ms).abs()
    else:
        raise ValueError(f"mode must be 'max_diff' or 'diff_max', got {mode!r}")
    return score, mt > ms


def select_general_instances(boxes_t: Tensor, boxes_s: Tensor, score: Tensor,
                             teacher_wins: Tensor, img_hw: Tuple[int, int],
                             pre_topk: int = 3000, min_size: float = 10.0,
                             iou_threshold: float = 0.3, num_instances: int = 10,
                             strict: bool = True) -> Tuple[Tensor, Tensor]:
    """Pick the general instances of one image.

    1. Keep the ``pre_topk`` candidates with the highest GI score. 2. Take the teacher's box
    where the teacher is more confident, else the student's; clip it to the image and keep it
    only if both sides are ``> min_size`` (``strict``, the release) or ``>= min_size``. 3. NMS at
    ``iou_threshold`` (mmcv), ranked by score. 4. Keep the best ``num_instances``.

    Args:
        boxes_t / boxes_s: (N, 4) teacher / student boxes of the candidates.
        score, teacher_wins: from :func:`gi_scores`.
        img_hw: (h, w) of the valid image area.

    Returns:
        ``(boxes, scores)``: (K, 4) and (K,), K <= ``num_instances``, best first.
    """
    k = min(int(pre_topk), score.numel())
    top = score.topk(k).indices
    boxes = torch.where(teacher_wins[top, None], boxes_t[top], boxes_s[top]).detach().float()
    boxes = boxes.clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, img_hw[1])
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, img_hw[0])
    sc = score[top].detach().float()
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    ok = ((bw > min_size) & (bh > min_size)) if strict else ((bw >= min_size) & (bh >= min_size))
    boxes, sc = boxes[ok], sc[ok]
    if boxes.shape[0] == 0:
        return boxes, sc
    _, keep = nms(boxes, sc, iou_threshold)
    keep = keep[:num_instances]
    return boxes[keep], sc[keep]
