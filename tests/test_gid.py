"""GID: selection, feature / relation / response terms, adapter training."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from torch import nn

from conftest import STUDENT_CFG, TEACHER_CFG, TINY_RETINA
from mmkd.models import DistillContext
from mmkd.models.methods.gid import (GeneralInstanceDistillLoss, gi_scores, relation_loss,
                                     select_general_instances)


def test_scores_paper_and_code_variants():
    # two classes, sigmoid heads; logits chosen so the two formulas disagree
    t = torch.logit(torch.tensor([[0.9, 0.1], [0.5, 0.5]]))
    s = torch.logit(torch.tensor([[0.1, 0.9], [0.5, 0.4]]))
    paper, t_wins = gi_scores(t, s, 'max_diff', 'sigmoid')
    code, _ = gi_scores(t, s, 'diff_max', 'sigmoid')
    torch.testing.assert_close(paper, torch.tensor([0.8, 0.1]))
    torch.testing.assert_close(code, torch.tensor([0.0, 0.0]), atol=1e-6, rtol=0)
    assert t_wins.tolist() == [False, False]  # equal maxima: the student's box
    # softmax heads: the background column is ignored
    t2 = torch.log(torch.tensor([[0.7, 0.1, 0.2]]))
    s2 = torch.log(torch.tensor([[0.2, 0.1, 0.7]]))
    score, wins = gi_scores(t2, s2, 'max_diff', 'softmax')
    assert score.item() == pytest.approx(0.5) and wins.tolist() == [True]


def test_selection_on_a_hand_made_example():
    boxes_t = torch.tensor([[0, 0, 40, 40], [2, 2, 42, 42], [60, 60, 100, 100],
                            [0, 0, 5, 50], [50, 0, 90, 30], [10, 60, 40, 90]], dtype=torch.float)
    boxes_s = boxes_t + 1.0
    score = torch.tensor([0.9, 0.8, 0.7, 0.95, 0.6, 0.1])
    t_wins = torch.tensor([True, True, False, True, True, True])
    boxes, sc = select_general_instances(boxes_t, boxes_s, score, t_wins, (100, 100),
                                         pre_topk=5, min_size=10, iou_threshold=0.3,
                                         num_instances=3)
    # box 3 is 5 px wide (dropped), box 1 overlaps box 0 (NMS), box 5 is outside the top 5;
    # box 2 uses the student's box (the student was more confident) clipped to the image
    assert sc.tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert boxes.tolist() == [[0, 0, 40, 40], [61, 61, 100, 100], [50, 0, 90, 30]]
    # the release keeps sides strictly > min_size; strict=False keeps sides >= min_size
    exact = torch.tensor([[0.0, 0.0, 10.0, 30.0], [50.0, 50.0, 61.0, 61.0]])
    kept, _ = select_general_instances(exact, exact, torch.tensor([0.9, 0.8]),
                                       torch.tensor([True, True]), (100, 100), min_size=10)
    assert kept.tolist() == [[50, 50, 61, 61]]
    kept, _ = select_general_instances(exact, exact, torch.tensor([0.9, 0.8]),
                                       torch.tensor([True, True]), (100, 100), min_size=10,
                                       strict=False)
    assert kept.tolist() == [[0, 0, 10, 30], [50, 50, 61, 61]]
    none, _ = select_general_instances(boxes_t[:0], boxes_s[:0], score[:0], t_wins[:0],
                                       (100, 100))
    assert none.shape == (0, 4)


def test_relation_loss_hand_value():
    s = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    ds = torch.cdist(s, s)
    dt = torch.cdist(t, t)
    off = ~torch.eye(3, dtype=torch.bool)
    ds, dt = ds / ds[off].mean(), dt / dt[off].mean()
    want = F.smooth_l1_loss(ds[off], dt[off], beta=1.0, reduction='sum') / 6
    assert relation_loss(s, t).item() == pytest.approx(want.item())
    assert relation_loss(s[:2], t[:2]).item() == 0.0  # fewer than 3 instances


class _Prior:
    strides = [(8, 8)]


class _DenseDet(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.neck = nn.Module()
        self.neck.out_channels = c
        self.bbox_head = nn.Module()
        self.bbox_head.prior_generator = _Prior()


class _FixedGIs(GeneralInstanceDistillLoss):
    """Selection replaced by fixed instances (the public ``select`` overridden), to check the
    loss terms by hand."""

    def __init__(self, gis, aux, **kw):
        super().__init__(**kw)
        self._gis, self._aux = gis, aux

    def select(self, ctx):
        return self._gis, [g.new_ones(len(g)) for g in self._gis], self._aux


def test_defaults_are_the_release_and_options_are_validated():
    loss = GeneralInstanceDistillLoss()
    assert (loss.score_mode, loss.relation_scope, loss.adapter_type) == ('diff_max', 'batch',
                                                                         None)
    assert loss.w['feat'] == 5e-4 and loss.sel['strict'] and loss.finest_scale_cfg is None
    for bad in (dict(score_mode='max'), dict(relation_scope='gpu'), dict(adapter='conv1x1')):
        with pytest.raises(ValueError, match='must be one of'):
            GeneralInstanceDistillLoss(**bad)
    # the release compares raw pooled features: different widths need the adapter option
    with pytest.raises(ValueError, match="adapter='conv3x3'"):
        GeneralInstanceDistillLoss().setup(_DenseDet(2), _DenseDet(3))
    loss.setup(_DenseDet(2), _DenseDet(2))
    assert isinstance(loss.adapter, nn.Identity) and not list(loss.parameters())
    # pooling level rule: canonical 224 px at P4, i.e. finest scale 112 with P3 (stride 8)
    # first and 56 with P2 (stride 4) first; an int overrides it
    assert loss.pool_s.finest_scale == 112
    p2 = _DenseDet(2)
    p2.bbox_head.prior_generator = type('P', (), {'strides': [(4, 4), (8, 8)]})()
    loss.setup(p2, p2)
    assert loss.pool_s.finest_scale == 56
    fixed = GeneralInstanceDistillLoss(finest_scale=56)
    fixed.setup(_DenseDet(2), _DenseDet(2))
    assert fixed.pool_s.finest_scale == fixed.pool_t.finest_scale == 56


def test_feature_term_without_adapter_hand_value():
    gis = [torch.tensor([[8.0, 8.0, 40.0, 40.0], [16.0, 0.0, 56.0, 32.0]])]
    loss = _FixedGIs(gis, None, feat_weight=1.0, relation_weight=0.0, cls_weight=0.0,
                     reg_weight=0.0)
    loss.setup(_DenseDet(2), _DenseDet(2))
    s = torch.ones(1, 2, 8, 8, requires_grad=True)
    t = torch.stack([torch.full((8, 8), v) for v in (2.0, 0.5)])[None]
    from mmdet.structures import DetDataSample
    ds = DetDataSample(metainfo=dict(img_shape=(64, 64), batch_input_shape=(64, 64)))
    out = loss(DistillContext(None, None, [ds], (s, ), (t, )))
    # constant maps: per cell, sum over channels of (t - s)^2 = 1 + 0.25
    assert out['feat'].item() == pytest.approx(1.25, rel=1e-5)
    out['feat'].backward()
    assert s.grad.abs().sum() > 0


def test_feature_term_hand_value_and_adapter_gradient():
    gis = [torch.tensor([[8.0, 8.0, 40.0, 40.0], [16.0, 0.0, 56.0, 32.0]])]
    loss = _FixedGIs(gis, None, feat_weight=1.0, relation_weight=0.0, cls_weight=0.0,
                     reg_weight=0.0, adapter='conv3x3')
    loss.setup(_DenseDet(2), _DenseDet(3))
    nn.init.zeros_(loss.adapter.weight)
    loss.adapter.bias.data = torch.tensor([1.0, 0.0, -1.0])
    s = torch.ones(1, 2, 8, 8)
    t = torch.stack([torch.full((8, 8), v) for v in (2.0, 0.5, -1.0)])[None]
    from mmdet.structures import DetDataSample
    ds = DetDataSample(metainfo=dict(img_shape=(64, 64), batch_input_shape=(64, 64)))
    out = loss(DistillContext(None, None, [ds], (s, ), (t, )))
    # pooled maps are constant: sum over channels of (t - b)^2 = 1 + 0.25 + 0 per cell
    assert out['feat'].item() == pytest.approx(1.25, rel=1e-5)
    out['feat'].backward()
    assert loss.adapter.weight.grad is not None and loss.adapter.bias.grad.abs().sum() > 0


def test_response_terms_hand_value():
    priors = torch.tensor([[0, 0, 10, 10], [0, 0, 20, 20], [50, 50, 60, 60]], dtype=torch.float)
    gis = [torch.tensor([[0.0, 0.0, 20.0, 20.0]])]
    sc = torch.tensor([[[0.5, -1.0], [2.0, 0.0], [0.0, 0.0]]])
    tc = torch.tensor([[[1.0, 1.0], [-2.0, 0.5], [3.0, 3.0]]])
    sr = torch.tensor([[[0.1, 0.2, 0.3, 0.4], [1.0, 0.0, 0.0, 0.0], [9.0, 9, 9, 9]]])
    tr = torch.zeros(1, 3, 4)
    loss = _FixedGIs(gis, None, reg_beta=0.0)
    loss.setup(_DenseDet(2), _DenseDet(2))
    cls, reg = loss._response_dense(None, gis, dict(priors=priors, sc=sc, tc=tc, sr=sr, tr=tr))
    # IoU with the GI: anchor 0 -> 0.25 (below 0.5, and not the GI's best anchor), anchor 1 ->
    # 1.0, anchor 2 -> 0: only anchor 1 is matched
    want_cls = F.binary_cross_entropy_with_logits(sc[0, 1], tc[0, 1].sigmoid(),
                                                  reduction='sum')
    assert cls.item() == pytest.approx(want_cls.item(), rel=1e-5)
    assert reg.item() == pytest.approx(1.0)


def _build(loss, student=STUDENT_CFG, teacher=TEACHER_CFG):
    return MODELS.build(dict(type='DistillDetector', student=student, teacher=teacher,
                             teacher_ckpt=None, distill_losses=dict(loss_gid=loss)))


@pytest.mark.parametrize('arch', ['two_stage', 'retinanet'])
def test_loss_step_trains_the_adapter(arch):
    torch.manual_seed(0)
    if arch == 'retinanet':
        retina = TINY_RETINA
        model = _build(dict(type='GeneralInstanceDistillLoss', min_size=2, adapter='conv3x3'),
                       retina, retina)
        num_classes = 4
    else:
        model = _build(dict(type='GeneralInstanceDistillLoss', min_size=2, adapter='conv3x3'))
        num_classes = 8
    packed = demo_mm_inputs(2, [[3, 128, 128], [3, 96, 128]], num_items=[3, 1],
                            num_classes=num_classes, use_box_type=False)
    data = model.data_preprocessor(packed, True)
    out = model(**data, mode='loss')
    keys = {'loss_gid_feat', 'loss_gid_rel', 'loss_gid_cls', 'loss_gid_reg'}
    assert keys <= set(out)
    assert out['loss_gid_feat'].item() > 0
    sum(out[k] for k in keys).backward()
    adapter = model.distill_losses.loss_gid.adapter
    assert adapter.weight.grad is not None and adapter.weight.grad.abs().sum() > 0


# ---- two-stage (Faster R-CNN) path: a hand-computed step ---------------------------------------
class _GivenTeacherRoIs(DistillContext):
    """A step whose teacher R-CNN outputs on the sampled RoIs are given
    (``teacher_roi_forward`` is the context's public seam)."""

    def __init__(self, *args, teacher_out, **kwargs):
        super().__init__(*args, **kwargs)
        self._teacher_out = teacher_out

    def teacher_roi_forward(self, rois):
        assert rois.shape[0] == self._teacher_out['cls_score'].shape[0]
        return self._teacher_out


def _frcnn():
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    from conftest import REPO
    register_all_modules()
    return MODELS.build(Config.fromfile(f'{REPO}/{STUDENT_CFG}').model)


def test_two_stage_selection_and_terms_equal_a_hand_computation():
    """Faster R-CNN student (mmkd's two-stage GID): the candidates are the sampled RoIs, scored
    |max p_t - max p_s| with both R-CNN softmaxes (background column left out); then the > 10 px
    filter, NMS 0.3 and the feature / response terms on the chosen GIs.

    Five RoIs of a 64 x 64 image; the student is uniform (max p_s = 1/9), the teacher's class-0
    logit L sets the score (R3 4 > R1 3 > R0 2 > R2 1.5 > R4 1):
    R3 is 6 px wide (dropped), R0 overlaps R1 (IoU 0.88, suppressed), R4 overlaps R2 (IoU 0.46,
    suppressed): the GIs are R1 and R2. The response term takes the RoIs with IoU >= 0.5 to a
    GI: R0, R1, R2 (not R3: IoU 0; not R4: 0.46)."""
    from mmdet.models.task_modules import AssignResult, SamplingResult
    from mmdet.structures import DetDataSample

    from mmkd.models.distill_context import StudentRoIs
    student = _frcnn()
    loss = GeneralInstanceDistillLoss(feat_weight=1e-2)
    loss.setup(student, student)
    assert loss.two_stage and loss.pool_s.finest_scale == 56  # canonical rule on P2-P5
    boxes = torch.tensor([[0., 0., 32., 32.], [2., 2., 32., 32.], [32., 32., 60., 60.],
                          [40., 0., 46., 20.], [47., 32., 60., 60.]])
    rois = torch.cat([torch.zeros(5, 1), boxes], 1)
    assign = AssignResult(1, torch.tensor([1, 1, 1, 0, 0]), torch.ones(5),
                          labels=torch.tensor([0, 0, 0, -1, -1]))
    sres = SamplingResult(torch.tensor([0, 1, 2]), torch.tensor([3, 4]), boxes, boxes[:1],
                          assign, torch.zeros(5, dtype=torch.uint8))
    s_cls = torch.zeros(5, 9, requires_grad=True)
    t_cls = torch.zeros(5, 9)
    t_cls[:, 0] = torch.tensor([2.0, 3.0, 1.5, 4.0, 1.0])
    t_cls[2, 3] = 1.0  # a second class on R2 (its argmax stays class 0)
    s_reg = torch.zeros(5, 32)
    s_reg[:, :4] = torch.tensor([[0.1, 0.2, 0.3, 0.4], [1.0, 0.0, 0.0, 0.0],
                                 [0.0, 0.0, 0.0, -0.5], [5.0, 5.0, 5.0, 5.0],
                                 [5.0, 5.0, 5.0, 5.0]])
    s_reg[:, 4:] = 7.0  # other classes' deltas are never compared
    s_reg.requires_grad_(True)
    feats_s = tuple(torch.ones(1, 64, 64 // s, 64 // s, requires_grad=True)
                    for s in (4, 8, 16, 32, 64))
    t_level = torch.full((64, ), 0.5)
    t_level[0] = 2.0
    feats_t = tuple(t_level.view(1, 64, 1, 1).expand(1, 64, 64 // s, 64 // s).clone()
                    for s in (4, 8, 16, 32, 64))
    ds = DetDataSample(metainfo=dict(img_shape=(64, 64), batch_input_shape=(64, 64)))
    ctx = _GivenTeacherRoIs(student, None, [ds], feats_s, feats_t,
                            student_rois=StudentRoIs([sres], rois, s_cls, s_reg,
                                                     torch.zeros(5, 64, 7, 7)),
                            teacher_out=dict(cls_score=t_cls, bbox_pred=torch.zeros(5, 32)))
    gis, scores, _ = loss.select(ctx)
    assert gis[0].tolist() == [[2., 2., 32., 32.], [32., 32., 60., 60.]]

    def p_max(logit):  # max foreground softmax probability with the other 8 logits at 0
        return math.exp(logit) / (math.exp(logit) + 8)

    assert scores[0].tolist() == pytest.approx([p_max(3.0) - 1 / 9,
                                                math.exp(1.5) / (math.exp(1.5) + math.e + 7)
                                                - 1 / 9], rel=1e-5)
    out = loss(ctx)
    # feature: constant maps, per pooled cell sum_c (t - s)^2 = 1 + 63 * 0.25
    assert out['feat'].item() == pytest.approx(1e-2 * (1 + 63 * 0.25), rel=1e-5)
    assert out['rel'].item() == 0.0  # two GIs: no relation
    # response on R0, R1, R2: KL(p_t || p_s) with T = 1, averaged over the 3 RoIs
    kl = 0.0
    for i in range(3):
        pt = [math.exp(v) for v in t_cls[i].tolist()]
        pt = [v / sum(pt) for v in pt]
        kl += sum(p * math.log(p * 9) for p in pt)  # p_s = 1/9 everywhere
    assert out['cls'].item() == pytest.approx(0.1 * kl / 3, rel=1e-5)
    # L1 of the class-0 deltas (the teacher's argmax class) against the teacher's zeros
    assert out['reg'].item() == pytest.approx((1.0 + 1.0 + 0.5) / 3, rel=1e-5)
    sum(out.values()).backward()
    assert s_cls.grad[:3].abs().sum() > 0 and not s_cls.grad[3:].any()
    assert feats_s[0].grad.abs().sum() > 0
