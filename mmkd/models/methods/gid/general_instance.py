"""GID: General Instance Distillation (Dai et al., CVPR 2021).

General instances (GIs) are the boxes where teacher and student disagree most, chosen with no
regard to the ground truth (:mod:`.selection`). Three terms distil through them:

* feature: 10x10 RoIAlign features of every GI from both FPNs; the student's go through a
  *trained* shared 3x3 adapter (the released code never applied its adapter),
  ``sum_{c,x,y} (t - A(s))^2 / (N_GI * 100)``;
* relation: pairwise Euclidean distances between the GIs' flattened features, each matrix
  divided by the mean of its positive off-diagonal entries, Huber (beta 1) between teacher and
  student over i != j; per image by default (``relation_scope='batch'``: the original's whole
  batch); 0 with fewer than 3 GIs;
* response: on the anchors the student's matcher would assign to the GIs (IoU >= 0.5, or the
  best anchor of a GI), BCE of the student's logits against the teacher's sigmoid scores and
  smooth-L1 between their deltas, each divided by the number of those anchors.

One-stage students (RetinaNet-style anchor heads) follow the re-implementation. For two-stage
students (Faster R-CNN) the candidates are the student's sampled RoIs, scored by both R-CNN
heads on the same boxes; see docs/methods/gid.md for that variant's choices.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.structures.bbox import bbox_overlaps
from mmengine.structures import InstanceData
from torch import Tensor, nn

from ...distill_context import DistillContext, StudentDenseTargets
from ...losses.base import BaseDistillLoss, require_finite
from ...losses.feature_imitation import neck_channels
from ...losses.functional import soft_label_kl
from ...losses.roi_reg_kd import class_deltas
from ...utils.box_pool import boxes_to_rois
from .selection import gi_scores, select_general_instances


def normalised_distances(x: Tensor) -> Tensor:
    """(N, D) -> (N, N) Euclidean distances divided by the mean positive off-diagonal one."""
    d = torch.cdist(x.float(), x.float())
    off = ~torch.eye(len(x), dtype=torch.bool, device=x.device)
    pos = d[off & (d > 0)]
    return d / pos.mean() if pos.numel() else d


def relation_loss(s: Tensor, t: Tensor) -> Tensor:
    """Huber(beta 1) between normalised distance matrices over i != j; 0 for fewer than 3."""
    n = s.shape[0]
    if n < 3:
        return s.sum() * 0.0
    off = ~torch.eye(n, dtype=torch.bool, device=s.device)
    ds, dt = normalised_distances(s.flatten(1)), normalised_distances(t.flatten(1).detach())
    return F.smooth_l1_loss(ds[off], dt[off], beta=1.0, reduction='sum') / (n * n - n)


@MODELS.register_module()
class GeneralInstanceDistillLoss(BaseDistillLoss):
    """GID's feature, relation and response distillation on general instances.

    Args:
        score_mode: ``'max_diff'`` (paper) or ``'diff_max'`` (released code).
        pre_topk / min_size / nms_iou / num_instances: the selection (3000, 10 px, 0.3, K=10).
        feat_weight / relation_weight / cls_weight / reg_weight: lambda_f (5e-3), lambda_r
            (40), lambda_cls (0.1), lambda_reg (1.0).
        reg_beta: smooth-L1 beta of the response regression (0 = L1).
        relation_scope: ``'image'`` (default) or ``'batch'`` (the released code).
        roi_size: RoIAlign output size (10).
    """

    def __init__(self, score_mode: str = 'max_diff', pre_topk: int = 3000,
                 min_size: float = 10.0, nms_iou: float = 0.3, num_instances: int = 10,
                 feat_weight: float = 5e-3, relation_weight: float = 40.0,
                 cls_weight: float = 0.1, reg_weight: float = 1.0, reg_beta: float = 0.0,
                 relation_scope: str = 'image', roi_size: int = 10, **kwargs) -> None:
        super().__init__(**kwargs)
        if score_mode not in ('max_diff', 'diff_max'):
            raise ValueError("score_mode must be 'max_diff' or 'diff_max'")
        if relation_scope not in ('image', 'batch'):
            raise ValueError("relation_scope must be 'image' or 'batch'")
        self.score_mode, self.relation_scope = score_mode, relation_scope
        self.sel = dict(pre_topk=pre_topk, min_size=min_size, iou_threshold=nms_iou,
                        num_instances=num_instances)
        self.w = dict(feat=feat_weight, rel=relation_weight, cls=cls_weight, reg=reg_weight)
        self.reg_beta, self.roi_size = float(reg_beta), int(roi_size)

    def setup(self, student: nn.Module, teacher: nn.Module) -> None:
        """Choose the one- or two-stage path, build the adapter and the RoIAlign poolers."""
        self.two_stage = bool(getattr(student, 'with_roi_head', False))
        if self.two_stage:
            self.needs = frozenset({'student_rois', 'teacher_roi_head'})
            strides = list(student.roi_head.bbox_roi_extractor.featmap_strides)
        else:
            self.needs = frozenset({'student_head', 'teacher_head'})
            strides = [s[0] if isinstance(s, (tuple, list)) else s
                       for s in student.bbox_head.prior_generator.strides]
        super().setup(student, teacher)
        cs, ct = neck_channels(student), neck_channels(teacher)
        self.adapter = nn.Conv2d(cs, ct, 3, padding=1)  # shared over levels, trained

        def pooler(c: int) -> nn.Module:
            return MODELS.build(dict(
                type='SingleRoIExtractor', out_channels=c, featmap_strides=strides,
                roi_layer=dict(type='RoIAlign', output_size=self.roi_size, sampling_ratio=2,
                               aligned=True)))

        self.pool_s, self.pool_t = pooler(cs), pooler(ct)
        if not self.two_stage:
            self.assigner = TASK_UTILS.build(dict(
                type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0,
                match_low_quality=True, ignore_iof_thr=-1))

    # ---- selection --------------------------------------------------------------------------
    def _select_dense(self, ctx: DistillContext):
        """GIs of a one-stage student: all anchors of all levels are candidates."""
        head = ctx.student.bbox_head
        s_cls, s_reg = ctx.student_head_outs[:2]
        t_cls, t_reg = ctx.teacher_head_outs[:2]
        StudentDenseTargets.check_same_anchors(s_cls, t_cls, 'GID')
        c = head.cls_out_channels
        priors = torch.cat(head.prior_generator.grid_priors(
            [x.shape[-2:] for x in s_cls], device=s_cls[0].device))

        def flat(xs: List[Tensor], k: int) -> Tensor:  # (B, N, k), anchors in prior order
            return torch.cat([StudentDenseTargets.flat_logits(x, k) for x in xs], 1)

        sc, tc, sr, tr = flat(s_cls, c), flat(t_cls, c), flat(s_reg, 4), flat(t_reg, 4)
        gis = []
        for i, ds in enumerate(ctx.data_samples):
            with torch.no_grad():
                score, t_wins = gi_scores(tc[i], sc[i].detach(), self.score_mode, 'sigmoid')
                bt = head.bbox_coder.decode(priors, tr[i])
                bs = head.bbox_coder.decode(priors, sr[i].detach())
                gis.append(select_general_instances(bt, bs, score, t_wins, ds.img_shape,
                                                    **self.sel)[0])
        return gis, dict(priors=priors, sc=sc, tc=tc, sr=sr, tr=tr)

    def _select_rois(self, ctx: DistillContext):
        """GIs of a two-stage student: its sampled RoIs, scored by both R-CNN heads."""
        rec = ctx.student_rois
        t_out = ctx.teacher_roi_forward(rec.rois)
        gis, offset = [], 0
        for ds, res in zip(ctx.data_samples, rec.sampling_results):
            n = int(res.priors.shape[0])
            sl = slice(offset, offset + n)
            offset += n
            with torch.no_grad():
                score, t_wins = gi_scores(t_out['cls_score'][sl], rec.cls_score[sl].detach(),
                                          self.score_mode, 'softmax')
                boxes = rec.rois[sl, 1:]
                gis.append(select_general_instances(boxes, boxes, score, t_wins,
                                                    ds.img_shape, **self.sel)[0])
        return gis, dict(t_out=t_out)

    # ---- terms ------------------------------------------------------------------------------
    def forward(self, ctx: DistillContext) -> Dict[str, Tensor]:
        gis, aux = self._select_rois(ctx) if self.two_stage else self._select_dense(ctx)
        rois = boxes_to_rois(gis).to(ctx.student_feats[0].device)
        out: Dict[str, Tensor] = {}
        n_in = self.pool_s.num_inputs
        s_pool = self.pool_s(ctx.student_feats[:n_in], rois)
        with torch.no_grad():
            t_pool = self.pool_t(ctx.teacher_feats[:n_in], rois)
        if self.w['feat']:
            if rois.shape[0]:
                sq = (t_pool - self.adapter(s_pool)).pow(2).sum()
                out['feat'] = self.w['feat'] * sq / (rois.shape[0] * self.roi_size ** 2)
            else:
                out['feat'] = self.zero(ctx.student_feats[0]) + s_pool.sum() * 0.0
        if self.w['rel']:
            if self.relation_scope == 'batch':
                rel = relation_loss(s_pool, t_pool)
            else:
                rel = torch.stack([relation_loss(s_pool[rois[:, 0] == i], t_pool[rois[:, 0] == i])
                                   for i in range(len(gis))]).mean()
            out['rel'] = self.w['rel'] * rel
        if self.w['cls'] or self.w['reg']:
            cls, reg = (self._response_rois(ctx, gis, aux) if self.two_stage
                        else self._response_dense(ctx, gis, aux))
            if self.w['cls']:
                out['cls'] = self.w['cls'] * cls
            if self.w['reg']:
                out['reg'] = self.w['reg'] * reg
        return {k: require_finite(v, f'GID {k}') for k, v in out.items()}

    def _response_dense(self, ctx, gis, aux) -> Tuple[Tensor, Tensor]:
        """BCE to the teacher's sigmoid scores and smooth-L1 to its deltas, on the anchors the
        student's matcher assigns to the GIs."""
        masks = []
        for g in gis:
            if g.shape[0] == 0:
                masks.append(torch.zeros(len(aux['priors']), dtype=torch.bool,
                                         device=aux['priors'].device))
                continue
            res = self.assigner.assign(
                InstanceData(priors=aux['priors']),
                InstanceData(bboxes=g, labels=g.new_zeros(len(g), dtype=torch.long)))
            masks.append(res.gt_inds > 0)
        m = torch.stack(masks)  # (B, N)
        n = max(int(m.sum()), 1)
        sc, tc = aux['sc'][m], aux['tc'][m].detach()
        cls = F.binary_cross_entropy_with_logits(sc.float(), tc.float().sigmoid(),
                                                 reduction='sum') / n
        reg = self._reg_error(aux['sr'][m], aux['tr'][m]) / n
        return cls, reg

    def _response_rois(self, ctx, gis, aux) -> Tuple[Tensor, Tensor]:
        """On the sampled RoIs overlapping a GI (IoU >= 0.5): softmax KL of the R-CNN logits and
        smooth-L1 of the deltas of the teacher's most likely class."""
        rec, t_out = ctx.student_rois, aux['t_out']
        mask = torch.zeros(rec.rois.shape[0], dtype=torch.bool, device=rec.rois.device)
        for i, g in enumerate(gis):
            sel = (rec.rois[:, 0] == i).nonzero(as_tuple=True)[0]
            if g.shape[0] and sel.numel():
                iou = bbox_overlaps(rec.rois[sel, 1:], g)
                mask[sel[iou.max(1).values >= 0.5]] = True
        if not bool(mask.any()):
            zero = rec.cls_score.sum() * 0.0
            return zero, zero + rec.bbox_pred.sum() * 0.0
        s_logit, t_logit = rec.cls_score[mask], t_out['cls_score'][mask]
        cls = soft_label_kl(s_logit, t_logit, 1.0, 'batchmean')
        label = t_logit[:, :-1].argmax(1)
        reg = self._reg_error(class_deltas(rec.bbox_pred[mask], label),
                              class_deltas(t_out['bbox_pred'][mask], label)) / int(mask.sum())
        return cls, reg

    def _reg_error(self, student: Tensor, teacher: Tensor) -> Tensor:
        """Summed smooth-L1 (beta ``reg_beta``; beta 0 is an L1) between deltas."""
        return F.smooth_l1_loss(student.float(), teacher.detach().float(), beta=self.reg_beta,
                                reduction='sum')
