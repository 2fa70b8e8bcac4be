"""DSIG: Deep Structured Instance Graph distillation (Chen et al., ICCV 2021).

The instances of a batch form a graph per image: nodes are RoIAlign features (7x7, the input of
the box head) pooled with the same boxes from the student and the teacher FPN, edges are the
cosine similarities between nodes. The student imitates the teacher's nodes and edges:

    L_edge = 1/2 mean_ij (A_t - A_s)^2         over nodes V = positives + mined hard backgrounds
    L_fg   = mean (v_s - v_t)^2                 over the positive RoIs' elements
    L_bg   = alpha_n mean (v_s - v_t)^2         over all background RoIs, alpha_n = 7.5 |P|/|B|

Hard backgrounds are background RoIs on which the teacher is unsure: cross-entropy against the
background class >= 0.6. Two-stage students use their own sampled RoIs (recorded from their
forward: the RoI head does not run twice); RetinaNet students use their own post-NMS detections,
with no background nodes, unclipped and with no minimum size as in the release, pooled with the
release's level rule (detectron2's canonical 224 px at P4: ``finest_scale=112`` on P3-P7, see
:mod:`mmkd.models.utils.roi_levels`).

Per-image normalisation: the original *sums* the per-image losses over the images of one GPU (2
there). mmkd averages over the images of the batch and multiplies by ``image_scale`` (default 2),
so the loss does not change with images per GPU and matches the original at 2 images per GPU.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.config import ConfigDict
from torch import Tensor, nn

from ...distill_context import DistillContext
from ...losses.base import BaseDistillLoss, require_finite
from ...utils.box_pool import boxes_to_rois
from ...utils.roi_levels import resolve_finest_scale


def edge_matrix(nodes: Tensor) -> Tensor:
    """(N, D) node features -> (N, N) cosine similarities of the flattened rows."""
    v = F.normalize(nodes.flatten(1).float(), dim=1)
    return v @ v.t()


def edge_loss(nodes_s: Tensor, nodes_t: Tensor) -> Tensor:
    """``1/2 mean((A_t - A_s)^2)``; 0 when there are no nodes."""
    if nodes_s.shape[0] == 0:
        return nodes_s.sum() * 0.0
    return 0.5 * (edge_matrix(nodes_t.detach()) - edge_matrix(nodes_s)).pow(2).mean()


def node_loss(nodes_s: Tensor, nodes_t: Tensor) -> Tensor:
    """``mean((v_s - v_t)^2)`` over all elements; 0 when there are no nodes."""
    if nodes_s.shape[0] == 0:
        return nodes_s.sum() * 0.0
    return (nodes_s.float() - nodes_t.detach().float()).pow(2).mean()


def mine_hard_backgrounds(teacher_logits: Tensor, threshold: float = 0.6) -> Tensor:
    """Background RoIs on which the teacher's cross-entropy vs the background class (the last
    logit) is >= ``threshold``.

    Args:
        teacher_logits: (N, C + 1) teacher logits of background RoIs.

    Returns:
        (N,) bool mask.
    """
    ce = -F.log_softmax(teacher_logits.float(), dim=-1)[:, -1]
    return ce >= threshold


@MODELS.register_module()
class StructuredInstanceGraphLoss(BaseDistillLoss):
    """DSIG node and edge distillation.

    Args:
        edge_weight / fg_weight / bg_weight: weights of L_edge, L_fg and L_bg (1.0, 0.5, 0.5;
            ``bg_weight=0`` turns the background node loss off as in the R101<-R152 config).
        bg_alpha: the adaptive background weight factor (7.5).
        mining_threshold: teacher background cross-entropy for hard backgrounds (0.6).
        image_scale: per-image losses are averaged over the batch, then multiplied by this
            (2 = the original's sum over 2 images per GPU).
        detections: for one-stage students, how their post-NMS detections are made:
            ``nms_pre`` per level (1000), ``iou_threshold`` (0.5, class-wise), ``max_per_img``
            (100), ``score_thr`` (0), ``clip`` (False: boxes are not clipped to the image, as in
            the release; True clips them, mmkd's earlier behaviour) and ``min_bbox_size`` (-1:
            no size filter, as in the release; 0 drops empty boxes, mmkd's earlier behaviour).
        finest_scale: for one-stage students, the pooling level rule as mmdet's
            ``finest_scale``; None (default) is the release's canonical rule (224 px at P4),
            i.e. 112 on RetinaNet's P3-P7. (56, mmdet's default, pools boxes under 224 px one
            level too coarse there.)
        roi_extractor: for one-stage students, overrides of the 7x7 pooling config (mmdet
            SingleRoIExtractor over mmcv RoIAlign, aligned, adaptive sampling); strides default
            to the head's anchors.
    """

    term_weight_keys = {'edge': 'edge_weight', 'fg': 'fg_weight', 'bg': 'bg_weight'}
    #: keys of ``detections``.
    DETECTION_KEYS = ('nms_pre', 'iou_threshold', 'max_per_img', 'score_thr', 'clip',
                      'min_bbox_size')

    def __init__(self, edge_weight: float = 1.0, fg_weight: float = 0.5, bg_weight: float = 0.5,
                 bg_alpha: float = 7.5, mining_threshold: float = 0.6, image_scale: float = 2.0,
                 detections: Optional[dict] = None, finest_scale: Optional[int] = None,
                 roi_extractor: Optional[dict] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.edge_weight, self.fg_weight, self.bg_weight = edge_weight, fg_weight, bg_weight
        self.bg_alpha, self.mining_threshold = float(bg_alpha), float(mining_threshold)
        self.image_scale = float(image_scale)
        self.det_cfg = dict(nms_pre=1000, iou_threshold=0.5, max_per_img=100, score_thr=0.0,
                            clip=False, min_bbox_size=-1)
        unknown = sorted(set(detections or {}) - set(self.DETECTION_KEYS))
        if unknown:
            raise ValueError(f'StructuredInstanceGraphLoss detections: unknown key(s) {unknown}; '
                             f'valid keys are {list(self.DETECTION_KEYS)}.')
        self.det_cfg.update(detections or {})
        if finest_scale is not None and 'finest_scale' in (roi_extractor or {}):
            raise ValueError('StructuredInstanceGraphLoss: set finest_scale or '
                             'roi_extractor.finest_scale, not both.')
        self.finest_scale_cfg = finest_scale
        self.roi_extractor_cfg = roi_extractor
        self._one_stage_keys = [k for k, v in (('detections', detections),
                                               ('finest_scale', finest_scale),
                                               ('roi_extractor', roi_extractor)) if v is not None]
        self.roi_extractor: Optional[nn.Module] = None

    def setup(self, student: nn.Module, teacher: nn.Module) -> None:
        """Two-stage: needs the student's RoIs and the teacher's RoI head. One-stage: needs the
        student's head outputs and builds the node pooler."""
        self.two_stage = bool(getattr(student, 'with_roi_head', False))
        if self.two_stage:
            if self._one_stage_keys:
                raise ValueError(
                    f'StructuredInstanceGraphLoss: {self._one_stage_keys} apply to one-stage '
                    f'students only; {type(student).__name__} pools its own sampled RoIs with its '
                    'roi_head.bbox_roi_extractor (set finest_scale there). Remove them.')
            self.needs = frozenset({'student_rois', 'teacher_roi_head'})
        else:
            self.needs = frozenset({'student_head'})
            strides = list(student.bbox_head.prior_generator.strides)
            strides = [s[0] if isinstance(s, (tuple, list)) else s for s in strides]
            cfg = dict(type='SingleRoIExtractor',
                       roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0,
                                      aligned=True),
                       out_channels=student.neck.out_channels, featmap_strides=strides,
                       finest_scale=resolve_finest_scale(self.finest_scale_cfg, strides,
                                                         'StructuredInstanceGraphLoss'))
            cfg.update(self.roi_extractor_cfg or {})
            self.roi_extractor = MODELS.build(cfg)
            if student.neck.out_channels != getattr(teacher.neck, 'out_channels', None):
                raise ValueError('DSIG compares pooled FPN features node by node: student and '
                                 'teacher FPNs need the same out_channels.')
        super().setup(student, teacher)

    def forward(self, ctx: DistillContext) -> Dict[str, Tensor]:
        terms = self._two_stage(ctx) if self.two_stage else self._one_stage(ctx)
        n_img = len(ctx.data_samples)
        out = {}
        for k, w in (('edge', self.edge_weight), ('fg', self.fg_weight), ('bg', self.bg_weight)):
            if k in terms and w:
                out[k] = require_finite(w * self.image_scale * torch.stack(terms[k]).sum() / n_img,
                                        f'DSIG {k}')
        return out

    def _two_stage(self, ctx: DistillContext) -> Dict[str, List[Tensor]]:
        rec = ctx.student_rois
        t_out = ctx.teacher_roi_forward(rec.rois)  # all sampled RoIs, pooled from the teacher FPN
        v_s, v_t = rec.bbox_feats, t_out['bbox_feats']
        terms: Dict[str, List[Tensor]] = {'edge': [], 'fg': [], 'bg': []}
        offset = 0
        for res in rec.sampling_results:
            n_pos, n_all = int(res.pos_priors.shape[0]), int(res.priors.shape[0])
            pos = torch.arange(offset, offset + n_pos, device=v_s.device)
            neg = torch.arange(offset + n_pos, offset + n_all, device=v_s.device)
            offset += n_all
            hard = neg[mine_hard_backgrounds(t_out['cls_score'][neg], self.mining_threshold)]
            nodes = torch.cat([pos, hard])
            terms['edge'].append(edge_loss(v_s[nodes], v_t[nodes]))
            terms['fg'].append(node_loss(v_s[pos], v_t[pos]))
            alpha = self.bg_alpha * n_pos / max(len(neg), 1)
            terms['bg'].append(alpha * node_loss(v_s[neg], v_t[neg]))
        return terms

    @torch.no_grad()
    def node_boxes(self, ctx: DistillContext) -> List[Tensor]:
        """The boxes of a one-stage student's graph nodes: per image (n_i, 4) boxes in input
        pixels, its post-NMS detections by ``detections`` (mmdet's ``predict_by_feat`` on its
        recorded head outputs). Subclasses may override it to build the graph on other boxes.
        """
        head = ctx.student.bbox_head
        cls_scores, bbox_preds = ctx.student_head_outs[:2]
        c = self.det_cfg
        cfg = ConfigDict(nms_pre=c['nms_pre'], score_thr=c['score_thr'],
                         nms=dict(type='nms', iou_threshold=c['iou_threshold']),
                         max_per_img=c['max_per_img'], min_bbox_size=c['min_bbox_size'])
        metas = [d.metainfo for d in ctx.data_samples]
        if not c['clip']:  # the head's coder clips to img_shape; without one it does not
            metas = [dict(m, img_shape=None) for m in metas]
        results = head.predict_by_feat([s.detach() for s in cls_scores],
                                       [b.detach() for b in bbox_preds],
                                       batch_img_metas=metas, cfg=cfg, rescale=False,
                                       with_nms=True)
        return [r.bboxes for r in results]

    def _one_stage(self, ctx: DistillContext) -> Dict[str, List[Tensor]]:
        boxes = self.node_boxes(ctx)
        rois = boxes_to_rois(boxes).to(ctx.student_feats[0].device)
        n = self.roi_extractor.num_inputs
        v_s = self.roi_extractor(ctx.student_feats[:n], rois)
        with torch.no_grad():
            v_t = self.roi_extractor(ctx.teacher_feats[:n], rois)
        terms: Dict[str, List[Tensor]] = {'edge': [], 'fg': []}
        for i in range(len(boxes)):
            sel = rois[:, 0] == i
            terms['edge'].append(edge_loss(v_s[sel], v_t[sel]))
            terms['fg'].append(node_loss(v_s[sel], v_t[sel]))
        return terms

