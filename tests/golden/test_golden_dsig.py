"""Golden: DSIG's nodes, mining, levels, losses and gradients against the released code.

Fixtures ``dsig/*.pt`` (``CASES.md``, "DSIG"):

* ``frcnn_nodes_edges``: the Faster R-CNN graph on given positives and background RoIs (P2-P5,
  two 2-channel maps, a linear teacher box classifier on the flattened 7x7x2 node). The RoIs go
  in as the student's recorded RoI step (``StudentRoIs`` of real mmdet ``SamplingResult``s),
  the teacher is a real Faster R-CNN whose box classifier is that linear layer (mmdet
  ``ConvFCBBoxHead`` with no shared or classification convs / fcs; its box branch is unused).
* ``retinanet_level_rule``: the RetinaNet graph on given boxes (P3-P7), checking the pooling
  level rule (canonical 224 px at P4 = finest scale 112). The boxes go in through the public
  :meth:`StructuredInstanceGraphLoss.node_boxes`, overridden by a subclass.
"""
from typing import List

import torch
from mmdet.models.task_modules.assigners import AssignResult
from mmdet.models.task_modules.samplers import SamplingResult
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import bbox2roi
from mmdet.utils import register_all_modules
from torch import Tensor

from conftest import STUDENT_CFG, TINY_RETINA
from golden_utils import assert_same, assert_scalar, assert_tensor, assert_tensors, load_case
from mmkd.models import DistillContext
from mmkd.models.distill_context import StudentRoIs
from mmkd.models.methods.dsig import (StructuredInstanceGraphLoss, edge_loss, mine_hard_backgrounds,
                                      node_loss)
from mmkd.models.utils.box_pool import boxes_to_rois
from mmkd.utils.config import load_model_cfg


def _samples(hw, n: int) -> List[DetDataSample]:
    return [DetDataSample(metainfo=dict(img_shape=tuple(hw), batch_input_shape=tuple(hw)))
            for _ in range(n)]


# ---- Faster R-CNN ----------------------------------------------------------------------------
def _frcnn(case: dict):
    """A Faster R-CNN with 2-channel P2-P5 and a linear box classifier on the 7x7x2 node."""
    c = case['student_feats'][0].shape[1]
    spec = dict(config=STUDENT_CFG, neck=dict(out_channels=c),
                rpn_head=dict(in_channels=c, feat_channels=c),
                roi_head=dict(bbox_roi_extractor=dict(
                    out_channels=c, featmap_strides=case['strides'],
                    roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0,
                                   aligned=True)),
                    bbox_head=dict(_delete_=True, type='ConvFCBBoxHead', num_shared_convs=0,
                                   num_shared_fcs=0, num_cls_convs=0, num_cls_fcs=0,
                                   num_reg_convs=0, num_reg_fcs=1, fc_out_channels=8,
                                   with_avg_pool=False,
                                   roi_feat_size=7, in_channels=c,
                                   num_classes=case['num_classes'],
                                   bbox_coder=dict(type='DeltaXYWHBBoxCoder'))))
    register_all_modules()
    return MODELS.build(load_model_cfg(spec, 'model'))


def _sampling_result(pos: Tensor, neg: Tensor) -> SamplingResult:
    """The sampled RoIs of one image, positives first (each its own GT here)."""
    p, n = len(pos), len(neg)
    assign = AssignResult(num_gts=p, gt_inds=torch.cat([torch.arange(1, p + 1),
                                                        torch.zeros(n, dtype=torch.long)]),
                          max_overlaps=torch.cat([torch.ones(p), torch.zeros(n)]),
                          labels=torch.cat([torch.zeros(p, dtype=torch.long),
                                            torch.full((n, ), -1, dtype=torch.long)]))
    return SamplingResult(pos_inds=torch.arange(p), neg_inds=torch.arange(p, p + n),
                          priors=torch.cat([pos, neg]), gt_bboxes=pos, assign_result=assign,
                          gt_flags=torch.zeros(p + n, dtype=torch.uint8))


def test_frcnn_nodes_mining_edges():
    case = load_case('dsig/frcnn_nodes_edges.pt')
    student, teacher = _frcnn(case), _frcnn(case)
    fc = teacher.roi_head.bbox_head.fc_cls
    with torch.no_grad():
        fc.weight.copy_(case['teacher_head_weight'])
        fc.bias.copy_(case['teacher_head_bias'])
    teacher.eval()
    loss = StructuredInstanceGraphLoss(edge_weight=case['edge_weight'],
                                       fg_weight=case['fg_weight'], bg_weight=case['bg_weight'],
                                       bg_alpha=case['bg_alpha'],
                                       mining_threshold=case['mining_threshold'], image_scale=2)
    loss.setup(student, teacher)
    assert loss.two_stage

    feats = tuple(f.clone().requires_grad_(True) for f in case['student_feats'])
    t_feats = tuple(case['teacher_feats'])
    results = [_sampling_result(p, n) for p, n in zip(case['pos_boxes'], case['neg_boxes'])]
    rois = bbox2roi([r.priors for r in results])
    extractor = student.roi_head.bbox_roi_extractor
    assert_same('roi levels', extractor.map_roi_levels(rois, 4),
                case['roi_levels_pos_then_neg'])
    v_s = extractor(feats, rois)  # the student's own RoI features (recorded in a real step)
    rec = StudentRoIs(sampling_results=results, rois=rois,
                      cls_score=torch.zeros(len(rois), case['num_classes'] + 1),
                      bbox_pred=torch.zeros(len(rois), 4), bbox_feats=v_s)
    ctx = DistillContext(student, teacher, _samples(case['input_hw'], 2), feats, t_feats,
                         student_rois=rec)
    out = loss(ctx)
    for k in ('edge', 'fg', 'bg'):
        assert_scalar(k, out[k], case[k])
    sum(out.values()).backward()
    assert_tensors('grad_student_feats_sum_of_3', [f.grad for f in feats],
                   case['grad_student_feats_sum_of_3'])

    # the pieces: teacher background logits, the mined RoIs, the per-image parts
    t_out = ctx.teacher_roi_forward(rois)
    offset, neg_logits = 0, []
    for i, r in enumerate(results):
        p, n = len(r.pos_priors), len(r.priors)
        pos, neg = slice(offset, offset + p), slice(offset + p, offset + n)
        offset += n
        neg_logits.append(t_out['cls_score'][neg])
        mined = mine_hard_backgrounds(t_out['cls_score'][neg], case['mining_threshold'])
        assert_same(f'mined_bg_index[{i}]', mined.nonzero(as_tuple=True)[0],
                    case['mined_bg_index'][i])
        vs, vt = v_s.detach(), t_out['bbox_feats']
        nodes = torch.cat([torch.arange(pos.start, pos.stop),
                           mined.nonzero(as_tuple=True)[0] + neg.start])
        # the stored per-image parts carry the term weights (they sum to edge, fg and bg)
        assert_scalar(f'per_image_edge[{i}]',
                      case['edge_weight'] * edge_loss(vs[nodes], vt[nodes]),
                      case['per_image_edge'][i])
        assert_scalar(f'per_image_fg[{i}]', case['fg_weight'] * node_loss(vs[pos], vt[pos]),
                      case['per_image_fg'][i])
        assert_scalar(f'per_image_bg[{i}]', case['bg_weight'] * case['bg_alpha'] * p / (n - p)
                      * node_loss(vs[neg], vt[neg]), case['per_image_bg'][i])
    assert_tensor('teacher_bg_logits', torch.cat(neg_logits), case['teacher_bg_logits'])


# ---- RetinaNet -------------------------------------------------------------------------------
class _GivenBoxes(StructuredInstanceGraphLoss):
    """DSIG on given node boxes instead of the student's detections."""

    def __init__(self, boxes: List[Tensor], **kwargs) -> None:
        super().__init__(**kwargs)
        self.given = boxes

    def node_boxes(self, ctx: DistillContext) -> List[Tensor]:
        return self.given


def _retinanet(c: int):
    register_all_modules()
    spec = dict(TINY_RETINA, neck=dict(TINY_RETINA['neck'], out_channels=c),
                bbox_head=dict(TINY_RETINA['bbox_head'], in_channels=c, feat_channels=c))
    return MODELS.build(load_model_cfg(spec, 'model'))


def _retina_step(case: dict, **options):
    c = case['student_feats'][0].shape[1]
    model = _retinanet(c)
    loss = _GivenBoxes(case['boxes'], edge_weight=case['edge_weight'],
                       fg_weight=case['fg_weight'], **options)
    loss.setup(model, model)
    assert not loss.two_stage
    feats = tuple(f.clone().requires_grad_(True) for f in case['student_feats'])
    ctx = DistillContext(model, model, _samples(case['input_hw'], 2), feats,
                         tuple(case['teacher_feats']))
    return loss, feats, loss(ctx)


def test_retinanet_level_rule_and_losses():
    case = load_case('dsig/retinanet_level_rule.pt')
    loss, feats, out = _retina_step(case)  # default: the release's canonical rule
    assert loss.roi_extractor.finest_scale == 112
    levels = loss.roi_extractor.map_roi_levels(boxes_to_rois(case['boxes']), 5)
    assert_same('box_levels', levels, case['box_levels'])
    assert_scalar('edge', out['edge'], case['edge'])
    assert_scalar('fg', out['fg'], case['fg'])
    assert 'bg' not in out
    (out['edge'] + out['fg']).backward()
    assert_tensors('grad_student_feats_edge_plus_fg', [f.grad for f in feats],
                   case['grad_student_feats_edge_plus_fg'])


def test_retinanet_mmdet_default_level_rule_is_not_the_release():
    """mmdet's finest scale 56 pools 18 of the 60 boxes one level coarser (CASES: fg +21 %)."""
    case = load_case('dsig/retinanet_level_rule.pt')
    loss, _, out = _retina_step(case, finest_scale=56)
    levels = loss.roi_extractor.map_roi_levels(boxes_to_rois(case['boxes']), 5)
    assert int((levels != case['box_levels']).sum()) == 18
    assert abs(float(out['fg']) - case['fg']) > 0.1 * case['fg']
