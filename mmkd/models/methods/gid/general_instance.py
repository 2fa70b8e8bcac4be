"""GID: General Instance Distillation (Dai et al., CVPR 2021).

General instances (GIs) are the boxes where teacher and student disagree most, chosen with no
regard to the ground truth (:mod:`.selection`). Three terms distil through them:

* feature: 10x10 RoIAlign features of every GI from both FPNs (level by detectron2's canonical
  rule, :mod:`mmkd.models.utils.roi_levels`), ``sum_{c,x,y} (t - A(s))^2 / (N_GI * 100)``; A is
  the identity as in the release (which builds an adapter but never applies it), or with
  ``adapter='conv3x3'`` a *trained* shared 3x3 conv on the pooled features;
* relation: pairwise Euclidean distances between the GIs' flattened features, each matrix
  divided by the mean of its positive off-diagonal entries, Huber (beta 1) between teacher and
  student over i != j; over all GIs of the batch as the release (``relation_scope='image'``:
  per image, averaged); 0 with fewer than 3 GIs;
* response: on the anchors the student's matcher would assign to the GIs (IoU >= 0.5, or the
  best anchor of a GI), BCE of the student's logits against the teacher's sigmoid scores and
  smooth-L1 between their deltas, each divided by the number of those anchors.

One-stage students (RetinaNet-style anchor heads) follow the re-implementation, whose released
configs are the defaults here. For two-stage students (Faster R-CNN), mmkd's own design (the
release has none): the candidates are the student's sampled RoIs, scored by both R-CNN heads on
the same boxes; see docs/methods/gid.md for that variant's choices.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

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
from ...utils.roi_levels import resolve_finest_scale
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


#: GeneralInstanceDistillLoss option values.
SCORE_MODES = ('diff_max', 'max_diff')
RELATION_SCOPES = ('batch', 'image')
ADAPTERS = (None, 'conv3x3')


@MODELS.register_module()
class GeneralInstanceDistillLoss(BaseDistillLoss):
    """GID's feature, relation and response distillation on general instances.

    The defaults are the release's (the six released RetinaNet configs); mmkd's reading of the
    paper is ``score_mode='max_diff', adapter='conv3x3', relation_scope='image'``
    (``configs/kd/retinanet_r101_r50_gid_paper_reading.py``).

    Args:
        score_mode: ``'diff_max'`` (default, the release: |max p_t - max p_s|) or
            ``'max_diff'`` (the paper as mmkd reads it: max_c |p_t - p_s|).
        pre_topk / min_size / nms_iou / num_instances: the selection (3000, 10 px, 0.3, K=10).
        strict_min_size: keep a GI only if both sides are ``> min_size`` (default, the
            release); False keeps sides ``>= min_size``.
        feat_weight / relation_weight / cls_weight / reg_weight: lambda_f (5e-4, the released
            configs; the code default was 5e-3), lambda_r (40), lambda_cls (0.1), lambda_reg
            (1.0).
        reg_beta: smooth-L1 beta of the response regression (0 = L1).
        relation_scope: ``'batch'`` (default, the release: one relation over all GIs of the
            batch) or ``'image'`` (per image, averaged over the images).
        adapter: None (default, the release: the feature term compares raw pooled features, so
            both FPNs need the same width) or ``'conv3x3'`` (a trained 3x3 conv, shared over
            levels, on the student's pooled features; required when the widths differ).
        roi_size: RoIAlign output size (10).
        finest_scale: the pooling level rule as mmdet's ``finest_scale``; None (default) is the
            release's canonical rule (224 px at P4): 112 on RetinaNet's P3-P7, 56 on an R-CNN's
            P2-P5 (:func:`mmkd.models.utils.roi_levels.canonical_finest_scale`).
    """

    term_weight_keys = {'feat': 'feat_weight', 'rel': 'relation_weight', 'cls': 'cls_weight',
                        'reg': 'reg_weight'}

    def __init__(self, score_mode: str = 'diff_max', pre_topk: int = 3000,
                 min_size: float = 10.0, nms_iou: float = 0.3, num_instances: int = 10,
                 feat_weight: float = 5e-4, relation_weight: float = 40.0,
                 cls_weight: float = 0.1, reg_weight: float = 1.0, reg_beta: float = 0.0,
                 relation_scope: str = 'batch', roi_size: int = 10,
                 adapter: Optional[str] = None, finest_scale: Optional[int] = None,
                 strict_min_size: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        for name, value, valid in (('score_mode', score_mode, SCORE_MODES),
                                   ('relation_scope', relation_scope, RELATION_SCOPES),
                                   ('adapter', adapter, ADAPTERS)):
            if value not in valid:
                raise ValueError(f'GeneralInstanceDistillLoss {name} must be one of {valid}, '
                                 f'got {value!r}')
        self.score_mode, self.relation_scope = score_mode, relation_scope
        self.sel = dict(pre_topk=pre_topk, min_size=min_size, iou_threshold=nms_iou,
                        num_instances=num_instances, strict=bool(strict_min_size))
        self.w = dict(feat=feat_weight, rel=relation_weight, cls=cls_weight, reg=reg_weight)
        self.reg_beta, self.roi_size = float(reg_beta), int(roi_size)
        self.adapter_type, self.finest_scale_cfg = adapter, finest_scale
        self.adapter: nn.Module = nn.Identity()

    def term_weight(self, term: str) -> Optional[float]:
        """The weight of ``term`` (``feat_weight`` ... are kept in ``self.w``)."""
        return float(self.w[term]) if term in self.term_weight_keys else None

    def setup(self, student: nn.Module, teacher: nn.Module) -> None:
        """Choose the one- or two-stage path, build the adapter (if any) and the RoIAlign
        poolers."""
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
        if self.adapter_type == 'conv3x3':
            self.adapter = nn.Conv2d(cs, ct, 3, padding=1)  # shared over levels, trained
        elif cs != ct and self.w['feat']:
            raise ValueError(
                f'GeneralInstanceDistillLoss: the student FPN has {cs} channels and the teacher '
                f'FPN {ct}; without an adapter (adapter=None, the release) the feature term '
                "compares them channel by channel. Set adapter='conv3x3' (a trained 3x3 conv) "
                'or feat_weight=0.')
        self.finest_scale = resolve_finest_scale(self.finest_scale_cfg, strides,
                                                 'GeneralInstanceDistillLoss')

        def pooler(c: int) -> nn.Module:
            return MODELS.build(dict(
                type='SingleRoIExtractor', out_channels=c, featmap_strides=strides,
                finest_scale=self.finest_scale,
                roi_layer=dict(type='RoIAlign', output_size=self.roi_size, sampling_ratio=2,
                               aligned=True)))

        self.pool_s, self.pool_t = pooler(cs), pooler(ct)
        if not self.two_stage:
            self.assigner = TASK_UTILS.build(dict(
                type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0,
                match_low_quality=True, ignore_iof_thr=-1))

    # ---- selection --------------------------------------------------------------------------
    def select(self, ctx: DistillContext) -> Tuple[List[Tensor], List[Tensor], dict]:
        """The general instances of the batch.

        Returns:
            ``(boxes, scores, aux)``: per image (K_i, 4) GI boxes in input pixels and (K_i,)
            their GI scores, best first; ``aux`` holds what the response term reuses (one-stage:
            ``priors`` (N, 4) and the flattened (B, N, K) logits / deltas ``sc, tc, sr, tr``;
            two-stage: the teacher's RoI outputs ``t_out``). Subclasses may override it to
            distil through other instances.
        """
        return self._select_rois(ctx) if self.two_stage else self._select_dense(ctx)

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
        gis, scores = [], []
        for i, ds in enumerate(ctx.data_samples):
            with torch.no_grad():
                score, t_wins = gi_scores(tc[i], sc[i].detach(), self.score_mode, 'sigmoid')
                bt = head.bbox_coder.decode(priors, tr[i])
                bs = head.bbox_coder.decode(priors, sr[i].detach())
                boxes, sel_scores = select_general_instances(bt, bs, score, t_wins,
                                                             ds.img_shape, **self.sel)
            gis.append(boxes)
            scores.append(sel_scores)
        return gis, scores, dict(priors=priors, sc=sc, tc=tc, sr=sr, tr=tr)

    def _select_rois(self, ctx: DistillContext):
        """GIs of a two-stage student: its sampled RoIs, scored by both R-CNN heads."""
        rec = ctx.student_rois
        t_out = ctx.teacher_roi_forward(rec.rois)
        gis, scores, offset = [], [], 0
        for ds, res in zip(ctx.data_samples, rec.sampling_results):
            n = int(res.priors.shape[0])
            sl = slice(offset, offset + n)
            offset += n
            with torch.no_grad():
                score, t_wins = gi_scores(t_out['cls_score'][sl], rec.cls_score[sl].detach(),
                                          self.score_mode, 'softmax')
                boxes = rec.rois[sl, 1:]
                boxes, sel_scores = select_general_instances(boxes, boxes, score, t_wins,
                                                             ds.img_shape, **self.sel)
            gis.append(boxes)
            scores.append(sel_scores)
        return gis, scores, dict(t_out=t_out)

    # ---- terms ------------------------------------------------------------------------------
    def forward(self, ctx: DistillContext) -> Dict[str, Tensor]:
        gis, _, aux = self.select(ctx)
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

    def response_anchor_mask(self, gis: List[Tensor], priors: Tensor) -> Tensor:
        """(B, N) bool: the anchors the student's matcher assigns to a GI of their image
        (``MaxIoUAssigner``: IoU >= 0.5 with a GI, or a GI's best anchor; IoU in [0.4, 0.5)
        counts as 0).

        Args:
            gis: per image (K_i, 4) GI boxes.
            priors: (N, 4) the anchors of all levels, in ``grid_priors`` order.
        """
        masks = []
        for g in gis:
            if g.shape[0] == 0:
                masks.append(torch.zeros(len(priors), dtype=torch.bool, device=priors.device))
                continue
            res = self.assigner.assign(
                InstanceData(priors=priors),
                InstanceData(bboxes=g, labels=g.new_zeros(len(g), dtype=torch.long)))
            masks.append(res.gt_inds > 0)
        return torch.stack(masks)

    def _response_dense(self, ctx, gis, aux) -> Tuple[Tensor, Tensor]:
        """BCE to the teacher's sigmoid scores and smooth-L1 to its deltas, on the anchors the
        student's matcher assigns to the GIs (:meth:`response_anchor_mask`)."""
        m = self.response_anchor_mask(gis, aux['priors'])  # (B, N)
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
