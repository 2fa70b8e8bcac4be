"""Global Knowledge (PGM + RDM) against the outputs of the authors' released code.

Every fixture of ``golden/gk/`` (CASES.md, "Global Knowledge") and every stored output and
gradient is checked, with mmkd built through its public constructors in the released settings:
``RobustDistillingModule(descriptor='int_crop', mask_painting='int_overwrite',
negative_r='keep', strides=...)``, set up on a real (tiny) mmdet Faster R-CNN. Inputs go in
through public seams only: ``load_state_dict`` for the adapters and prototypes, mmdet
``SamplingResult`` objects for the positive RoIs, and a :class:`DistillContext` whose public
``teacher_roi_forward`` returns the stored teacher RoI outputs.
"""
from functools import lru_cache
from typing import Dict

import pytest
import torch
import torch.nn.functional as F
from mmdet.models.task_modules import AssignResult, SamplingResult
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import bbox2roi
from mmengine.structures import InstanceData

from golden_utils import assert_same, assert_scalar, assert_tensor, assert_tensors, load_case
from mmkd.models import DistillContext, soft_label_kl
from mmkd.models.distill_context import StudentRoIs
from mmkd.models.losses import WeightSchedule
from mmkd.models.methods.global_knowledge import (PrototypeGenerationModule, RobustDistillingModule,
                                                  density_filter, gk_levels, joint_matching_pursuit,
                                                  robustness)
from mmkd.models.utils import TrainProgress
from mmkd.utils.config import load_model_cfg

RELEASED = dict(descriptor='int_crop', mask_painting='int_overwrite', negative_r='keep')


@lru_cache(maxsize=None)
def tiny_faster_rcnn(channels: int, num_classes: int, num_levels: int = 5):
    """A real mmdet Faster R-CNN with a ``channels``-wide FPN of ``num_levels`` levels (what
    ``setup`` reads: the neck, the class count and the RoI extractor with its finest-scale-56
    level rule). One level means P5 alone."""
    from mmdet.utils import register_all_modules
    register_all_modules()
    strides = [4, 8, 16, 32, 64][-num_levels:] if num_levels < 5 else [4, 8, 16, 32, 64]
    cfg = load_model_cfg(dict(
        config='mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
        backbone=dict(depth=18, base_channels=4, init_cfg=None),
        neck=dict(in_channels=[4, 8, 16, 32], out_channels=channels, num_outs=num_levels,
                  start_level=max(0, 4 - num_levels)),
        rpn_head=dict(in_channels=channels, feat_channels=channels,
                      anchor_generator=dict(strides=strides)),
        roi_head=dict(bbox_roi_extractor=dict(out_channels=channels,
                                              featmap_strides=strides[:4]),
                      bbox_head=dict(in_channels=channels, fc_out_channels=8,
                                     num_classes=num_classes))), 'student')
    return MODELS.build(cfg)


class FixtureContext(DistillContext):
    """A step whose teacher RoI branch is the stored one (``teacher_roi_forward`` is public)."""

    def __init__(self, *args, teacher_rois: Dict[str, torch.Tensor], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._teacher_rois = teacher_rois

    def teacher_roi_forward(self, rois: torch.Tensor) -> Dict[str, torch.Tensor]:
        assert torch.equal(rois, self._teacher_rois['rois']), 'RoIs differ from the fixture'
        return dict(cls_score=self._teacher_rois['cls_score'],
                    bbox_feats=self._teacher_rois['bbox_feats'])


def positive_sampling(boxes: torch.Tensor, labels: torch.Tensor) -> SamplingResult:
    """An mmdet SamplingResult whose positives are exactly ``boxes`` with ``labels``."""
    n = boxes.shape[0]
    assign = AssignResult(n, torch.arange(1, n + 1), torch.ones(n), labels=labels)
    return SamplingResult(torch.arange(n), torch.zeros(0, dtype=torch.long), boxes, boxes,
                          assign, boxes.new_ones(n, dtype=torch.uint8))


def prototype_state(proto_s: torch.Tensor, proto_t: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The ``pgm.*`` buffers of a PrototypeGenerationModule holding these (all valid)."""
    return {'proto_s': proto_s, 'proto_t': proto_t,
            'proto_valid': torch.ones(proto_s.shape[:3], dtype=torch.bool),
            'num_generated': torch.tensor(1)}


# ---- RDM: one step of the two-stage losses (rdm_grid_boxes, rdm_random_boxes) -----------------
@lru_cache(maxsize=None)
def rdm_run(name: str) -> dict:
    d = load_case(f'gk/{name}.pt')
    c = d['adapter_weight'].shape[1]
    loss = RobustDistillingModule(
        boxes='pos_rois', fg_weight=d['fg_weight'], bg_weight=d['bg_weight'],
        soft_weight=d['soft_weight'], temperature=d['temperature'],
        relation_weight=d['relation_weight'], strides=d['strides'], **RELEASED)
    student = tiny_faster_rcnn(c, d['num_classes'])
    loss.setup(student, student)
    state = {f'adapters.{l}.{k}': d[f'adapter_{k}'][l] for l in range(len(d['S']))
             for k in ('weight', 'bias')}
    state.update({f'pgm.{k}': v for k, v in prototype_state(d['proto_s'], d['proto_t']).items()})
    loss.load_state_dict(state, strict=True)

    boxes, labels = d['boxes'], d['labels']
    S = [s.clone().requires_grad_(True) for s in d['S']]
    cls_s = d['cls_s'].clone().requires_grad_(True)
    rois = bbox2roi(list(boxes))
    sres = [positive_sampling(b, lab) for b, lab in zip(boxes, labels)]
    hw = tuple(d['input_hw'])
    samples = [DetDataSample(metainfo=dict(img_shape=hw, batch_input_shape=hw)) for _ in boxes]
    ctx = FixtureContext(student, None, samples, tuple(S), tuple(d['T']),
                         progress=TrainProgress(epoch=d['epoch'], max_epochs=d['max_epochs']),
                         student_rois=StudentRoIs(sres, rois, cls_s, torch.zeros(len(rois), 4),
                                                  d['roi_s']),
                         teacher_rois=dict(rois=rois, cls_score=d['cls_t'],
                                           bbox_feats=d['roi_t']))
    out = loss(ctx)
    grads = {}
    for term in ('fg', 'bg', 'rel', 'soft'):
        g = torch.autograd.grad(out[term], S + [cls_s], retain_graph=True, allow_unused=True)
        grads[term] = [torch.zeros_like(x) if gi is None else gi for gi, x in zip(g, S + [cls_s])]
    info = loss.inspect(ctx, list(boxes), torch.cat(list(labels)))
    # painting alone, from the released r (isolates the mask rule from the descriptors)
    idx = torch.arange(len(rois))
    painted = loss.paint_masks(rois, list(d['r_levels']), d['box_levels'],
                               [s.shape[-2:] for s in S], len(boxes), hw, loss.mask_painting,
                               loss.strides)
    roi_levels = student.roi_head.bbox_roi_extractor.map_roi_levels(rois, 4)
    r_roi = robustness(loss.pgm, d['roi_s'].mean((2, 3)), d['roi_t'].mean((2, 3)), roi_levels,
                       torch.cat(list(labels)))
    return dict(d=d, out=out, grads=grads, info=info, painted=painted, idx=idx,
                roi_levels=roi_levels, r_roi=r_roi)


RDM_CASES = ['rdm_grid_boxes', 'rdm_random_boxes']


@pytest.mark.parametrize('name', RDM_CASES)
def test_rdm_levels(name):
    run = rdm_run(name)
    d = run['d']
    assert_same('box_levels', run['info']['level'], d['box_levels'])
    assert_same('roi_levels', run['roi_levels'], d['roi_levels'])


@pytest.mark.parametrize('name', RDM_CASES)
@pytest.mark.parametrize('key', ['desc_s', 'desc_t'])
def test_rdm_descriptors(name, key):
    run = rdm_run(name)
    assert_tensor(key, run['info'][key], run['d'][key])


@pytest.mark.parametrize('name', RDM_CASES)
def test_rdm_robustness(name):
    run = rdm_run(name)
    d, info = run['d'], run['info']
    assert_tensor('r_levels', info['r_levels'], d['r_levels'])
    assert_tensor('r_own', info['r'], d['r_own'])
    assert_tensor('r_roi', run['r_roi'], d['r_roi'])


@pytest.mark.parametrize('name', RDM_CASES)
def test_rdm_mask_painting_from_released_r(name):
    run = rdm_run(name)
    for l, (got, ref) in enumerate(zip(run['painted'], run['d']['fg_masks'])):
        assert_same(f'fg_masks[{l}]', got, ref)


@pytest.mark.parametrize('name', RDM_CASES)
def test_rdm_fg_masks_end_to_end(name):
    run = rdm_run(name)
    assert_tensors('fg_masks', run['info']['masks'], run['d']['fg_masks'])


@pytest.mark.parametrize('name', RDM_CASES)
@pytest.mark.parametrize('term', ['fg', 'bg', 'soft', 'rel'])
def test_rdm_losses(name, term):
    run = rdm_run(name)
    assert_scalar(term, run['out'][term], run['d'][term])


@pytest.mark.parametrize('name', RDM_CASES)
@pytest.mark.parametrize('term', ['fg', 'bg', 'rel'])
def test_rdm_feature_gradients(name, term):
    run = rdm_run(name)
    assert_tensors(f'grad_{term}_S', run['grads'][term][:-1], run['d'][f'grad_{term}_S'])


@pytest.mark.parametrize('name', RDM_CASES)
def test_rdm_soft_gradient_and_zero_cross_gradients(name):
    run = rdm_run(name)
    assert_tensor('grad_soft_cls_s', run['grads']['soft'][-1], run['d']['grad_soft_cls_s'])
    # the other cross-gradients are exactly 0 in the release
    assert all(not g.any() for g in run['grads']['soft'][:-1])
    for term in ('fg', 'bg', 'rel'):
        assert not run['grads'][term][-1].any()


# ---- robustness, soft label, level rule -------------------------------------------------------
def test_robustness_of_roi_features():
    d = load_case('gk/robustness.pt')
    L, C, M, D = d['proto_s'].shape
    pgm = PrototypeGenerationModule(L, C, D, d['proto_t'].shape[-1], M)
    pgm.load_state_dict(prototype_state(d['proto_s'], d['proto_t']))
    r = robustness(pgm, d['roi_s'].mean((2, 3)), d['roi_t'].mean((2, 3)), d['levels'],
                   d['labels'])
    assert_tensor('r', r, d['r'])


@pytest.mark.parametrize('weighted', [True, False])
def test_soft_label_kl(weighted):
    d = load_case('gk/soft_label.pt')
    zs = d['student_logits'].clone().requires_grad_(True)
    w = d['weights'] if weighted else None
    loss = soft_label_kl(zs, d['teacher_logits'], d['temperature'], 'classmean', weight=w)
    (grad, ) = torch.autograd.grad(loss, zs)
    tag = 'weighted' if weighted else 'unweighted'
    assert_scalar(f'loss_{tag}', loss, d[f'loss_{tag}'])
    assert_tensor(f'grad_{tag}', grad, d[f'grad_{tag}'])


def test_mask_level_rule_and_attenuation():
    d = load_case('gk/level_rule.pt')
    assert_same('levels', gk_levels(d['boxes'], d['num_levels']), d['levels'])
    sched = WeightSchedule(decay='linear', by='epoch')
    n = len(d['attenuation_epochs_0_23_of_24'])
    got = torch.tensor([sched(TrainProgress(epoch=e, max_epochs=n)) for e in range(n)],
                       dtype=torch.float64)
    assert_tensor('attenuation', got, d['attenuation_epochs_0_23_of_24'])


# ---- negative robustness --------------------------------------------------------------------
def test_negative_robustness_keeps_a_negative_fg_term():
    d = load_case('gk/negative_r.pt')
    c = d['S'].shape[1]
    loss = RobustDistillingModule(boxes='gt', soft_weight=0.0, feat_schedule={}, **RELEASED)
    student = tiny_faster_rcnn(c, 2, num_levels=1)
    loss.setup(student, student)
    eye = torch.zeros(c, c, 3, 3)
    eye[range(c), range(c), 1, 1] = 1.0  # D = S - T: the released case has no adapter weights
    proto_s = torch.zeros(1, 2, loss.pgm.proto_s.shape[2], c)
    proto_t = torch.zeros_like(proto_s)
    valid = torch.zeros(1, 2, proto_s.shape[2], dtype=torch.bool)
    proto_s[0, 1, 0], proto_t[0, 1, 0], valid[0, 1, 0] = d['proto_s_class1'], \
        d['proto_t_class1'], True
    loss.load_state_dict({'adapters.0.weight': eye, 'adapters.0.bias': torch.zeros(c),
                          'pgm.proto_s': proto_s, 'pgm.proto_t': proto_t,
                          'pgm.proto_valid': valid, 'pgm.num_generated': torch.tensor(1)})
    hw = tuple(d['input_hw'])
    sample = DetDataSample(metainfo=dict(img_shape=hw, batch_input_shape=hw))
    sample.gt_instances = InstanceData(bboxes=d['boxes'][0], labels=d['labels'][0])
    ctx = DistillContext(None, None, [sample], (d['S'], ), (d['T'], ))
    info = loss.inspect(ctx, d['boxes'], d['labels'][0])
    assert_scalar('r', info['r'][0], d['r'])
    assert_same('fg_mask', info['masks'][0], d['fg_mask'])
    out = loss(ctx)
    assert_scalar('fg_unattenuated', out['fg'], d['fg_unattenuated'])
    assert_scalar('bg_unattenuated', out['bg'], d['bg_unattenuated'])


# ---- PGM selection ---------------------------------------------------------------------------
def _pgm_case():
    return load_case('gk/pgm_selection.pt')


PGM_CLASSES = range(10)


@pytest.mark.parametrize('i', PGM_CLASSES)
def test_pgm_density_filter(i):
    d = _pgm_case()
    c = d['classes'][i]
    keep = density_filter(F.normalize(c['feats_s'], dim=1), F.normalize(c['feats_t'], dim=1),
                          d['bandwidth'], d['drop_ratio'])
    assert_same(f'candidates (N={c["n"]})', keep.nonzero(as_tuple=True)[0], c['candidates'])


@pytest.mark.parametrize('i', PGM_CLASSES)
def test_pgm_matching_pursuit_on_released_candidates(i):
    d = _pgm_case()
    c = d['classes'][i]
    picks = joint_matching_pursuit(F.normalize(c['feats_s'], dim=1),
                                   F.normalize(c['feats_t'], dim=1), c['candidates'],
                                   d['num_prototypes'], d['alpha'])
    assert_same(f'picks (N={c["n"]})', picks, c['picks'])


def test_pgm_generate_all_classes():
    d = _pgm_case()
    classes = d['classes']
    ds, dt = classes[0]['feats_s'].shape[1], classes[0]['feats_t'].shape[1]
    pgm = PrototypeGenerationModule(1, len(classes), ds, dt, d['num_prototypes'], d['alpha'],
                                    d['bandwidth'], d['drop_ratio'])
    pgm.generate([torch.cat([c['feats_s'] for c in classes])],
                 [torch.cat([c['feats_t'] for c in classes])],
                 [torch.cat([torch.full((c['n'], ), k) for k, c in enumerate(classes)])])
    for k, c in enumerate(classes):
        assert_same(f'proto_s class {k} (N={c["n"]})', pgm.proto_s[0, k], c['proto_s'])
        assert_same(f'proto_t class {k} (N={c["n"]})', pgm.proto_t[0, k], c['proto_t'])
    assert bool(pgm.proto_valid.all())
