"""Everything a distillation loss may use in one training step, computed only when asked."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from mmdet.structures.bbox import get_box_tensor
from torch import Tensor, nn

from .utils.progress import TrainProgress


@dataclass
class StudentRoIs:
    """The student's RoI-head step, recorded from its own forward (no second RoI pass).

    Attributes:
        sampling_results: per image, mmdet ``SamplingResult`` (positives first, then negatives).
        rois: (N, 5) ``[batch_idx, x1, y1, x2, y2]`` for all sampled RoIs of the batch, in the
            order of ``bbox2roi([res.priors for res in sampling_results])``.
        cls_score: (N, num_classes + 1) student classification logits for ``rois``.
        bbox_pred: (N, 4 or 4 * num_classes) student box deltas for ``rois``.
        bbox_feats: (N, C, k, k) RoIAlign features the box head consumed.
    """

    sampling_results: List[Any]
    rois: Tensor
    cls_score: Tensor
    bbox_pred: Tensor
    bbox_feats: Tensor

    @property
    def pos_index(self) -> Tensor:
        """(P,) indices into ``rois`` of the positive RoIs of all images."""
        idx, offset = [], 0
        for res in self.sampling_results:
            n_pos = int(res.pos_priors.shape[0])
            idx.append(torch.arange(offset, offset + n_pos, device=self.rois.device))
            offset += int(res.priors.shape[0])
        return torch.cat(idx) if idx else self.rois.new_zeros(0, dtype=torch.long)

    @property
    def pos_labels(self) -> Tensor:
        """(P,) class labels of the positive RoIs (from their assigned GT boxes)."""
        return torch.cat([res.pos_gt_labels for res in self.sampling_results])


@dataclass
class StudentDenseTargets:
    """The student dense head's targets, recorded from its own loss (anchor-based heads).

    Attributes:
        anchors: per image, per level, (N_l, 4) anchors ``x1, y1, x2, y2``.
        labels: per level, (B, N_l) assigned class; ``num_classes`` (or more) = background.
        label_weights: per level, (B, N_l) weight of each anchor in the classification loss
            (0 = ignored anchor).
        cls_scores: per level, (B, A * C, H, W) student classification logits.
        bbox_preds: per level, (B, A * 4, H, W) student box deltas.
        num_classes: C.
    """

    anchors: List[List[Tensor]]
    labels: List[Tensor]
    label_weights: List[Tensor]
    cls_scores: List[Tensor]
    bbox_preds: List[Tensor]
    num_classes: int

    def positives(self, level: int, image: int) -> Tensor:
        """(N_l,) bool mask of the positive anchors of one image at one level."""
        lab = self.labels[level][image]
        return (lab >= 0) & (lab < self.num_classes)

    @staticmethod
    def check_same_anchors(student_outs: Sequence[Tensor], teacher_outs: Sequence[Tensor],
                           who: str) -> None:
        """Raise unless teacher and student dense-head maps match level by level (same anchors
        per location, same classes), which anchor-by-anchor distillation needs."""
        for l, (s, t) in enumerate(zip(student_outs, teacher_outs)):
            if s.shape != t.shape:
                raise ValueError(f'level {l}: student head output {tuple(s.shape)} vs teacher '
                                 f'{tuple(t.shape)}: {who} pairs anchors, so both heads need '
                                 'the same anchors and classes.')

    @staticmethod
    def flat_logits(cls_score: Tensor, num_classes: int) -> Tensor:
        """(B, A * K, H, W) -> (B, H * W * A, K), the order of the anchors and labels
        (K = C for logits, 4 for box deltas)."""
        b = cls_score.shape[0]
        return cls_score.permute(0, 2, 3, 1).reshape(b, -1, num_classes)


class DistillContext:
    """What one step offers the distillation losses.

    Teacher outputs beyond the FPN are computed on first access and cached, so the teacher runs
    only as far as the active losses need. All teacher computation runs under ``no_grad``.

    Args:
        student: the student detector.
        teacher: the frozen teacher.
        data_samples: the batch's ``DetDataSample`` list (GT instances, image shapes).
        student_feats: tuple of L tensors (B, C_s, H_l, W_l), the student's neck outputs.
        teacher_feats: tuple of L tensors (B, C_t, H_l', W_l'), or a zero-argument callable
            computing them on first access.
        progress: training position (for schedules and attenuation).
        student_head_outs: the student's dense-head outputs (one-stage students), if recorded.
        student_rois: the student's RoI step (two-stage students), if recorded.
        student_dense: the student dense head's anchors, targets and logits, if recorded.
        batch_inputs: (B, C, H, W) the batch as the student saw it (normalised and padded by the
            student's data_preprocessor), for losses that look at pixels.
        teacher_inputs: callable mapping a student-normalised (B, C, H, W) tensor to the
            teacher's input convention (see :class:`~mmkd.models.utils.TeacherInputAdapter`).
        teacher_head_outs: the teacher's dense-head outputs, if already computed (else they are
            computed on first access of :attr:`teacher_head_outs`).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, data_samples: Sequence[Any],
                 student_feats: Tuple[Tensor, ...],
                 teacher_feats: 'Tuple[Tensor, ...] | Callable[[], Tuple[Tensor, ...]]',
                 progress: Optional[TrainProgress] = None, student_head_outs: Any = None,
                 student_rois: Optional[StudentRoIs] = None,
                 student_dense: Optional[StudentDenseTargets] = None,
                 batch_inputs: Optional[Tensor] = None,
                 teacher_inputs: Optional[Callable[[Tensor], Tensor]] = None,
                 teacher_head_outs: Any = None) -> None:
        self.student, self.teacher = student, teacher
        self.data_samples = list(data_samples)
        self.student_feats = tuple(student_feats)
        self._teacher_feats = teacher_feats
        self.progress = progress or TrainProgress()
        self.student_head_outs = student_head_outs
        self.student_rois = student_rois
        self.student_dense = student_dense
        self.batch_inputs = batch_inputs
        self.to_teacher_inputs = teacher_inputs
        self._cache: Dict[str, Any] = {}
        if teacher_head_outs is not None:
            self._cache['teacher_head'] = teacher_head_outs

    @property
    def teacher_feats(self) -> Tuple[Tensor, ...]:
        """The teacher's neck outputs (computed once, without grad)."""
        if callable(self._teacher_feats):
            with torch.no_grad():
                self._teacher_feats = tuple(self._teacher_feats())
        return self._teacher_feats

    @property
    def teacher_head_outs(self) -> Any:
        """The teacher's dense-head outputs on its FPN features (cached, no grad)."""
        if 'teacher_head' not in self._cache:
            with torch.no_grad():
                self._cache['teacher_head'] = self.teacher.bbox_head(self.teacher_feats)
        return self._cache['teacher_head']

    def teacher_roi_forward(self, rois: Tensor) -> Dict[str, Tensor]:
        """Run the teacher's RoI box branch on ``rois`` (N, 5); returns cls_score, bbox_pred,
        bbox_feats. The features are pooled with the teacher's RoI extractor (mmcv RoIAlign)."""
        with torch.no_grad():
            return self.teacher.roi_head._bbox_forward(self.teacher_feats, rois)

    # ---- batch facts -------------------------------------------------------------------------
    @property
    def batch_input_shape(self) -> Tuple[int, int]:
        """(H, W) of the padded batch the student saw."""
        return tuple(self.data_samples[0].batch_input_shape)

    @property
    def gt_bboxes(self) -> List[Tensor]:
        """Per image, (N_i, 4) GT boxes ``x1, y1, x2, y2`` in batch-input pixels."""
        out = []
        for ds in self.data_samples:
            out.append(get_box_tensor(ds.gt_instances.bboxes))
        return out

    @property
    def gt_labels(self) -> List[Tensor]:
        """Per image, (N_i,) GT class labels."""
        return [ds.gt_instances.labels for ds in self.data_samples]
