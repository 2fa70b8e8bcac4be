"""DICOD: Distilling Image Classifiers in Object Detectors (Guo et al., NeurIPS 2021).

The teacher is an image classifier (:class:`.CropClassifier`) that looks at crops of the
student's input image, cut with a differentiable crop-and-resize (:mod:`.crop`):

* classification: every GT box is cropped (no grad) and classified by the teacher; each positive
  anchor (one-stage) or positive RoI (two-stage) inherits the logits of its assigned GT. Loss:
  ``T^2 * sum_pos sum_c (p_t + eps) (log(p_t + eps) - log(p_s + eps)) / N`` with
  ``p_s = softmax(z_s / T)`` over the student's C + 1 outputs and
  ``p_t = [softmax(z_t / T), 0]``: the teacher puts no mass on background;
* localisation: the predicted box of every positive and its GT box are cropped, then compared
  as pixels pooled to 4x4 (L1 / (3*4*4)) and as the teacher's stem features pooled to 8x8
  (L1 / (C_stem*8*8)); ``sum_pos (pix + stem) / N``. The gradient flows through the crop
  into the predicted box, i.e. into the student's box regression, and through the frozen
  teacher's stem for the predicted crops (GT crops run under no_grad).

``N`` is the detector's own classification normaliser: for one-stage students the release's
(mmdet 2.x SSD's) ``sum_i max(n_i, 1)`` over the images, n_i the positives of image i; for
two-stage students the number of sampled RoIs (what the R-CNN head averages its losses over).
Dividing an R-CNN's KL by its ~20 positives instead made the term ~100x stronger per positive
than the head's own cross-entropy; on the built-in data that collapsed the student's RoI head to
constant scores (0.0 AP).

Crops are cut from the batch in the *teacher's* input convention
(``ctx.to_teacher_inputs(ctx.batch_inputs)``): the teacher's data_preprocessor declares it. The
crop conventions at the image edge are options (:mod:`.crop`): the release's zero padding and
one-sided clamp by default, mmkd's border padding and two-sided clamp on request.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.task_modules.prior_generators import anchor_inside_flags
from mmdet.registry import MODELS
from mmdet.structures.bbox import get_box_tensor
from mmengine.structures import InstanceData
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ...distill_context import DistillContext, StudentDenseTargets
from ...losses.base import BaseDistillLoss, require_finite
from ...losses.roi_reg_kd import class_deltas
from .classifier import CropClassifier
from .crop import CLAMP_MODES, PADDING_MODES, crop_and_resize


def teacher_target(teacher_logits: Tensor, temperature: float) -> Tensor:
    """(P, C) teacher logits -> (P, C + 1) target distribution with zero background mass
    (background is the last column, mmdet's softmax-head convention)."""
    p = F.softmax(teacher_logits.detach().float() / float(temperature), dim=-1)
    return torch.cat([p, p.new_zeros(p.shape[0], 1)], dim=1)


def dicod_cls_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 2.0,
                 eps: float = 1e-10) -> Tensor:
    """Per-row epsilon-smoothed KL(p_t || p_s) of DICOD, without the T^2 factor.

    Args:
        student_logits: (P, C + 1) softmax-head logits (background last).
        teacher_logits: (P, C) classifier logits.
        temperature: T.
        eps: the smoothing added to both distributions inside and outside the logs.

    Returns:
        (P,) ``sum_c (p_t + eps) * (log(p_t + eps) - log(p_s + eps))``.
    """
    if student_logits.shape[1] != teacher_logits.shape[1] + 1:
        raise ValueError(
            f'student logits have {student_logits.shape[1]} columns and teacher logits '
            f'{teacher_logits.shape[1]}: DICOD needs a softmax student head with C + 1 outputs '
            '(background last) and a classifier teacher with the same C classes.')
    pt = teacher_target(teacher_logits, temperature)
    ps = F.softmax(student_logits.float() / float(temperature), dim=-1)
    return ((pt + eps) * (torch.log(pt + eps) - torch.log(ps + eps))).sum(1)


@dataclass
class Positives:
    """The student's positive samples of one step.

    Attributes:
        batch_idx: (P,) image of each positive.
        gt_index: (P,) index of its assigned GT in the batch's concatenated GT boxes.
        cls_logits: (P, C + 1) student logits, or None when the head is not a softmax head.
        pred_boxes: (P, 4) decoded predicted boxes (pixels), carrying the graph.
        avg_factor: what both terms are divided by: the detector's own classification
            normaliser (one-stage: ``sum_i max(n_i, 1)`` over the images, n_i the positives of
            image i, as the release's SSD; two-stage: the number of sampled RoIs, the R-CNN
            head's). 0 means the number of positives.
    """

    batch_idx: Tensor
    gt_index: Tensor
    cls_logits: Optional[Tensor]
    pred_boxes: Tensor
    avg_factor: int = 0


@MODELS.register_module()
class DICODLoss(BaseDistillLoss):
    """DICOD's classification and localisation distillation from a classifier teacher.

    Returns ``{'cls': ..., 'loc': ...}``, already multiplied by ``cls_weight`` and
    ``loc_weight`` (the distiller multiplies both by ``loss_weight``, 1 by default).

    Works with anchor-based one-stage students (positives and their GT from the head's own
    targets; the classification term needs a softmax head such as SSD's) and with two-stage
    students (the R-CNN head's positive RoIs).

    Args:
        cls_weight: lambda_cls (0.4); the T^2 factor is applied on top. 0 disables the term
            (and the same-classes check).
        loc_weight: lambda_loc (0.15); 0 disables the term.
        temperature: T (2).
        eps: KL smoothing (1e-10).
        crop_size: side of the crops fed to the teacher (112 for a ResNet-50 on COCO; the
            teacher should be trained on crops of this size).
        pixel_pool: pooled size of the pixel-level comparison (4).
        stem_pool: pooled size of the stem-feature comparison (8).
        chunk_size: boxes per chunk (256).
        checkpoint_chunks: recompute each localisation chunk in backward
            (``torch.utils.checkpoint``), so memory holds one chunk's crops and stem
            activations instead of all of them. The teacher is in eval mode, so the
            recomputation is exact.
        padding_mode: ``grid_sample`` padding of every crop: ``'zeros'`` (default, the
            release) or ``'border'`` (mmkd's own; ``'reflection'`` also accepted).
        box_clamp: how boxes that leave the image are clamped before cropping:
            ``'one_sided'`` (default, the release: x1, y1 >= 0, x2 <= W, y2 <= H of the padded
            batch; a box entirely outside inverts), ``'two_sided'`` (mmkd's own: every
            coordinate into the valid ``img_shape``) or ``'none'``.
    """

    needs = frozenset({'student_dense_targets'})
    term_weight_keys = {'cls': 'cls_weight', 'loc': 'loc_weight'}

    def __init__(self, cls_weight: float = 0.4, loc_weight: float = 0.15,
                 temperature: float = 2.0, eps: float = 1e-10, crop_size: int = 112,
                 pixel_pool: int = 4, stem_pool: int = 8, chunk_size: int = 256,
                 checkpoint_chunks: bool = True, padding_mode: str = 'zeros',
                 box_clamp: str = 'one_sided', **kwargs) -> None:
        super().__init__(**kwargs)
        if padding_mode not in PADDING_MODES:
            raise ValueError(f'DICODLoss padding_mode must be one of {PADDING_MODES}, got '
                             f'{padding_mode!r}')
        if box_clamp not in CLAMP_MODES:
            raise ValueError(f'DICODLoss box_clamp must be one of {CLAMP_MODES}, got '
                             f'{box_clamp!r}')
        self.padding_mode, self.box_clamp = padding_mode, box_clamp
        if cls_weight < 0 or loc_weight < 0:
            raise ValueError('cls_weight and loc_weight must be >= 0')
        if temperature <= 0:
            raise ValueError(f'temperature must be > 0, got {temperature}')
        for name, v in (('crop_size', crop_size), ('pixel_pool', pixel_pool),
                        ('stem_pool', stem_pool), ('chunk_size', chunk_size)):
            if int(v) < 1:
                raise ValueError(f'{name} must be a positive integer, got {v}')
        self.cls_weight, self.loc_weight = float(cls_weight), float(loc_weight)
        self.temperature, self.eps = float(temperature), float(eps)
        self.crop_size, self.pixel_pool = int(crop_size), int(pixel_pool)
        self.stem_pool, self.chunk_size = int(stem_pool), int(chunk_size)
        self.checkpoint_chunks = bool(checkpoint_chunks)
        # the class counts must agree only when the classification term is on
        self.requires_same_classes = self.cls_weight > 0
        self.two_stage = False

    # ---- build-time checks -----------------------------------------------------------------
    def setup(self, student: nn.Module, teacher: nn.Module) -> None:
        """Pick the one- or two-stage path from the student and check both models."""
        if not isinstance(teacher, CropClassifier):
            raise TypeError(f'DICODLoss needs an image-classifier teacher (type=\'CropClassifier\''
                            f'), got {type(teacher).__name__}. Train one with '
                            'tools/train_cls_teacher.py.')
        self.two_stage = bool(getattr(student, 'with_roi_head', False))
        self.needs = frozenset({'student_rois'} if self.two_stage else {'student_dense_targets'})
        super().setup(student, teacher)
        if self.cls_weight > 0:
            if self.two_stage:
                head = student.roi_head.bbox_head
                if isinstance(head, nn.ModuleList):
                    raise ValueError('DICODLoss supports single-stage R-CNN heads, not cascades')
                softmax = not getattr(head, 'custom_cls_channels', False) and not getattr(
                    getattr(head, 'loss_cls', None), 'use_sigmoid', False)
            else:
                head = student.bbox_head
                softmax = (not getattr(head, 'use_sigmoid_cls', True)
                           and getattr(head, 'cls_out_channels', 0) == head.num_classes + 1)
            if not softmax:
                raise ValueError(
                    f'DICOD\'s classification term needs a softmax student head with C + 1 '
                    f'outputs (background last); {type(head).__name__} uses sigmoid scores. '
                    'Set cls_weight=0 to distil only localisation, or use a softmax head '
                    '(e.g. SSD).')

    # ---- the student's positives -----------------------------------------------------------
    def _dense_positives(self, ctx: DistillContext) -> Positives:
        """Positive anchors of a one-stage student, with their GT index (re-running the head's
        deterministic assigner on exactly the anchors its ``get_targets`` used)."""
        dense: StudentDenseTargets = ctx.student_dense
        if dense is None:
            raise RuntimeError('DICODLoss: the student head\'s targets were not recorded '
                               '(its loss did not call bbox_head.get_targets)')
        head = ctx.student.bbox_head
        b = len(ctx.data_samples)
        k = head.cls_out_channels
        cls = torch.cat([StudentDenseTargets.flat_logits(s, k) for s in dense.cls_scores], 1)
        deltas = torch.cat([StudentDenseTargets.flat_logits(p, 4) for p in dense.bbox_preds], 1)
        labels = torch.cat([lab.reshape(b, -1) for lab in dense.labels], 1)
        metas = [ds.metainfo for ds in ctx.data_samples]
        sizes = [s.shape[-2:] for s in dense.cls_scores]
        _, valid_flags = head.get_anchors(sizes, metas, device=cls.device)
        border = (head.train_cfg or {}).get('allowed_border', -1)
        bidx, gidx, logits, boxes = [], [], [], []
        offset, avg_factor = 0, 0
        for i, ds in enumerate(ctx.data_samples):
            gt = ds.gt_instances
            n_gt = len(gt)
            pos = ((labels[i] >= 0) & (labels[i] < head.num_classes)).nonzero(as_tuple=True)[0]
            avg_factor += max(int(pos.numel()), 1)  # the release's SSD: sum_i max(n_i, 1)
            if pos.numel():
                anchors = torch.cat([get_box_tensor(a) for a in dense.anchors[i]])
                inside = anchor_inside_flags(anchors, torch.cat(valid_flags[i]),
                                             ds.metainfo['img_shape'][:2], border)
                assign = head.assigner.assign(InstanceData(priors=anchors[inside]), gt,
                                              ds.get('ignored_instances', None))
                gt_of = anchors.new_full((anchors.shape[0], ), -1, dtype=torch.long)
                gt_of[inside] = assign.gt_inds.long() - 1
                g = gt_of[pos]
                if (g < 0).any() or (gt.labels[g.clamp(min=0)] != labels[i][pos]).any():
                    raise RuntimeError(
                        f'DICODLoss: re-running {type(head.assigner).__name__} of '
                        f'{type(head).__name__} does not reproduce its positive anchors; DICOD '
                        'needs a deterministic assigner and sampler (e.g. MaxIoUAssigner with '
                        'PseudoSampler, as SSD and RetinaNet use).')
                bidx.append(torch.full_like(pos, i))
                gidx.append(g + offset)
                logits.append(cls[i][pos])
                boxes.append(head.bbox_coder.decode(anchors[pos], deltas[i][pos]))
            offset += n_gt
        return self._pack(bidx, gidx, logits, boxes, cls, softmax=k == head.num_classes + 1,
                          avg_factor=avg_factor)

    def _roi_positives(self, ctx: DistillContext) -> Positives:
        """Positive RoIs of a two-stage student with their assigned GT."""
        rec = ctx.student_rois
        head = ctx.student.roi_head.bbox_head
        idx = rec.pos_index
        bidx, gidx, offset = [], [], 0
        for i, (res, ds) in enumerate(zip(rec.sampling_results, ctx.data_samples)):
            n = int(res.pos_priors.shape[0])
            bidx.append(torch.full((n, ), i, dtype=torch.long, device=rec.rois.device))
            gidx.append(res.pos_assigned_gt_inds.long() + offset)
            offset += len(ds.gt_instances)
        priors = torch.cat([get_box_tensor(res.pos_priors) for res in rec.sampling_results])
        deltas = class_deltas(rec.bbox_pred[idx], rec.pos_labels)
        boxes = head.bbox_coder.decode(priors, deltas)
        # the R-CNN head averages its own losses over all sampled RoIs, not over positives
        return self._pack(bidx, gidx, [rec.cls_score[idx]], [boxes], rec.cls_score,
                          softmax=rec.cls_score.shape[1] == head.num_classes + 1,
                          avg_factor=int(rec.rois.shape[0]))

    @staticmethod
    def _pack(bidx: List[Tensor], gidx: List[Tensor], logits: List[Tensor],
              boxes: List[Tensor], like: Tensor, softmax: bool,
              avg_factor: Optional[int] = None) -> Positives:
        """Concatenate the per-image positives; ``avg_factor`` defaults to their number (at
        least 1)."""
        dev = like.device
        if not bidx:
            empty = torch.zeros(0, dtype=torch.long, device=dev)
            return Positives(empty, empty, like.new_zeros(0, like.shape[-1]) if softmax else None,
                             like.new_zeros(0, 4))
        batch_idx = torch.cat(bidx)
        return Positives(batch_idx, torch.cat(gidx), torch.cat(logits) if softmax else None,
                         torch.cat(boxes), avg_factor if avg_factor is not None
                         else max(int(batch_idx.numel()), 1))

    # ---- teacher side ----------------------------------------------------------------------
    def _crops(self, images: Tensor, boxes: Tensor, bidx: Tensor, shapes: list) -> Tensor:
        return crop_and_resize(images, boxes, self.crop_size, bidx, shapes,
                               padding_mode=self.padding_mode, clamp=self.box_clamp)

    def _loc_features(self, teacher: CropClassifier, images: Tensor, boxes: Tensor,
                      bidx: Tensor, shapes: list) -> Tuple[Tensor, Tensor]:
        """(n, 4) boxes -> ((n, 3, p, p) pooled pixels, (n, C_stem, q, q) pooled stem)."""
        crops = self._crops(images, boxes, bidx, shapes)
        pix = F.adaptive_avg_pool2d(crops, self.pixel_pool)
        stem = F.adaptive_avg_pool2d(teacher.stem(crops), self.stem_pool)
        return pix, stem

    def forward(self, ctx: DistillContext,
                positives: Optional[Positives] = None) -> Dict[str, Tensor]:
        """Returns ``{'cls': (), 'loc': ()}`` weighted by cls_weight / loc_weight.

        Args:
            ctx: the step's context (``batch_inputs``, ``to_teacher_inputs``, GT boxes, the
                teacher classifier, and the student's recorded targets or RoIs).
            positives: optional, the positives to distil instead of the student's own (e.g.
                those of another head, or given ones to compare with a reference); their
                ``gt_index`` indexes the batch's concatenated GT boxes. The distiller never
                passes it.
        """
        if ctx.batch_inputs is None or ctx.to_teacher_inputs is None:
            raise RuntimeError('DICODLoss needs ctx.batch_inputs and ctx.to_teacher_inputs '
                               '(set by DistillDetector.loss)')
        teacher: CropClassifier = ctx.teacher
        if positives is not None:
            pos = positives
        else:
            pos = self._roi_positives(ctx) if self.two_stage else self._dense_positives(ctx)
        zero = pos.pred_boxes.sum() * 0.0
        if pos.cls_logits is not None:
            zero = zero + pos.cls_logits.sum() * 0.0
        n_pos = int(pos.batch_idx.numel())
        out = {'cls': zero, 'loc': zero}
        if n_pos == 0:
            return out
        norm = pos.avg_factor if pos.avg_factor > 0 else n_pos

        with torch.no_grad():
            images = ctx.to_teacher_inputs(ctx.batch_inputs.detach())
        shapes = [tuple(ds.img_shape[:2]) for ds in ctx.data_samples]
        gts = torch.cat([b.to(images) for b in ctx.gt_bboxes])
        gt_bidx = torch.cat([torch.full((len(b), ), i, dtype=torch.long, device=images.device)
                             for i, b in enumerate(ctx.gt_bboxes)])
        # only the GT boxes some positive is assigned to
        used, inverse = torch.unique(pos.gt_index, return_inverse=True)

        # GT crops: teacher logits, pooled pixels and stem features, all without grad
        gt_logits, gt_pix, gt_stem = [], [], []
        with torch.no_grad():
            for s in range(0, used.numel(), self.chunk_size):
                sel = used[s:s + self.chunk_size]
                crops = self._crops(images, gts[sel], gt_bidx[sel], shapes)
                if self.cls_weight > 0:
                    logit, stem = teacher.forward_with_stem(crops)
                    gt_logits.append(logit.float())
                else:
                    stem = teacher.stem(crops)
                gt_pix.append(F.adaptive_avg_pool2d(crops, self.pixel_pool))
                gt_stem.append(F.adaptive_avg_pool2d(stem, self.stem_pool))

        if self.cls_weight > 0:
            t_logits = torch.cat(gt_logits)[inverse]
            per_row = dicod_cls_kl(pos.cls_logits, t_logits, self.temperature, self.eps)
            out['cls'] = require_finite(
                self.cls_weight * self.temperature ** 2 * per_row.sum() / norm,
                'DICOD cls')

        if self.loc_weight > 0:
            gt_pix_all, gt_stem_all = torch.cat(gt_pix), torch.cat(gt_stem)
            total = zero
            boxes = pos.pred_boxes.to(images.dtype)
            for s in range(0, n_pos, self.chunk_size):
                sl = slice(s, s + self.chunk_size)
                args = (teacher, images, boxes[sl], pos.batch_idx[sl], shapes)
                if self.checkpoint_chunks and torch.is_grad_enabled() and boxes.requires_grad:
                    pix, stem = checkpoint(self._loc_features, *args, use_reentrant=False)
                else:
                    pix, stem = self._loc_features(*args)
                g = inverse[sl]
                l_pix = (pix - gt_pix_all[g]).abs().flatten(1).mean(1)
                l_stem = (stem - gt_stem_all[g]).abs().flatten(1).mean(1)
                total = total + (l_pix + l_stem).sum()
            out['loc'] = require_finite(self.loc_weight * total / norm, 'DICOD loc')
        return out
