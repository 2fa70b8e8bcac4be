"""Global Knowledge RDM: levels, masks, every loss term against hand computations."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData
from torch import nn

from mmkd.models import DistillContext
from mmkd.models.methods.global_knowledge import (RobustDistillingModule, box_descriptors,
                                                  gk_levels, gk_masked_error)
from mmkd.models.utils import TrainProgress
from mmkd.models.utils.box_mask import paint_box_mask_overwrite


class _Neck(nn.Module):
    def __init__(self, c, n):
        super().__init__()
        self.out_channels, self.num_outs = c, n


class _Head(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.num_classes = k


class _Det(nn.Module):
    """The attributes RobustDistillingModule.setup reads from a detector."""

    def __init__(self, c=2, n=1, k=3):
        super().__init__()
        self.neck, self.bbox_head = _Neck(c, n), _Head(k)


def _identity_adapters(loss):
    for conv in loss.adapters:
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
        for c in range(conv.weight.shape[0]):
            conv.weight.data[c, c, 1, 1] = 1.0


def _sample(boxes, labels, hw=(8, 8)):
    ds = DetDataSample(metainfo=dict(img_shape=hw, batch_input_shape=hw))
    ds.gt_instances = InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
                                   labels=torch.tensor(labels, dtype=torch.long))
    return ds


def _gt_loss(**kw):
    loss = RobustDistillingModule(boxes='gt', soft_weight=0.0, feat_schedule={},
                                  pgm=dict(mode='online', min_size=0, num_prototypes=1), **kw)
    loss.setup(_Det(), _Det())
    _identity_adapters(loss)
    return loss


def test_gk_levels_rule():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 111, 111], [0, 0, 223, 223],
                          [0, 0, 2000, 2000]], dtype=torch.float32)
    # sqrt((w+1)(h+1)) / 56: 0.2 -> 0, 2.0 -> 1, 4.0 -> 2, 35.7 -> 5 clamped to 4
    assert gk_levels(boxes, 5).tolist() == [0, 1, 2, 4]


def test_gk_masked_error_hand_value():
    diff = torch.zeros(1, 2, 2, 2)
    diff[0, 0, 0, 0] = 2.0
    mask = torch.tensor([[[0.5, 0.0], [0.0, 0.0]]])
    assert gk_masked_error(diff, mask).item() == pytest.approx(0.5 * 4 / max(1, 2 * 2 * 0.5))
    big = torch.ones(1, 2, 2, 2)
    assert gk_masked_error(big, torch.ones(1, 2, 2)).item() == pytest.approx(8 / 16)


def test_imitation_terms_hand_values_without_prototypes():
    loss = _gt_loss(fg_weight=1.0, bg_weight=4.0)
    s = torch.zeros(1, 2, 4, 4)
    t = torch.zeros(1, 2, 4, 4)
    t[0, 0, 0, 0] = 2.0  # inside the box (cells rows 0-1, cols 0-1 at stride 2)
    t[0, 1, 3, 3] = 1.0  # background
    ctx = DistillContext(None, None, [_sample([[0, 0, 4, 4]], [1])], (s, ), (t, ),
                         progress=TrainProgress(max_epochs=12))
    out = loss(ctx)
    # no prototypes yet: r = 1, fg mask = the 4 box cells
    assert out['fg'].item() == pytest.approx(4 / (2 * 2 * 4))
    assert out['bg'].item() == pytest.approx(4.0 * 1 / (2 * 2 * 12))


def test_robustness_paints_the_mask_and_attenuation_scales_feature_terms():
    loss = _gt_loss(fg_weight=1.0, bg_weight=0.0)
    s = torch.zeros(1, 2, 4, 4)
    s[0, 0] = 1.0  # student descriptor of the box: (1, 0)
    t = torch.zeros(1, 2, 4, 4)
    t[0, 0] = 1.0
    t[0, 1] = 1.0  # teacher descriptor: (1, 1)
    # prototypes of class 1: student (1, 0) -> cos 1; teacher (0, 1) -> cos 1/sqrt(2)
    pgm = loss.pgm
    pgm.proto_s[0, 1, 0] = torch.tensor([1.0, 0.0])
    pgm.proto_t[0, 1, 0] = torch.tensor([0.0, 1.0])
    pgm.proto_valid[0, 1, 0] = True
    pgm.num_generated += 1
    r = 1 - abs(1 - 2 ** -0.5)
    ctx = DistillContext(None, None, [_sample([[0, 0, 4, 4]], [1])], (s, ), (t, ),
                         progress=TrainProgress(max_epochs=12))
    # D = S - T = (0, -1) on every cell; fg mask = r on the 4 box cells
    want = r * 4 * 1 / max(1, 2 * 2 * 4 * r)
    assert loss(ctx)['fg'].item() == pytest.approx(want, rel=1e-5)
    loss.feat_schedule = type(loss.feat_schedule)(decay='linear', by='epoch')
    ctx6 = DistillContext(None, None, ctx.data_samples, (s, ), (t, ),
                          progress=TrainProgress(epoch=6, max_epochs=12))
    assert loss(ctx6)['fg'].item() == pytest.approx(0.5 * want, rel=1e-5)


@pytest.mark.parametrize('negative_r', ['keep', 'clamp'])
def test_negative_robustness(negative_r):
    loss = _gt_loss(fg_weight=1.0, bg_weight=1.0, negative_r=negative_r)
    s = torch.zeros(1, 2, 4, 4)
    s[0, 0] = 1.0
    t = torch.zeros(1, 2, 4, 4)
    t[0, 0] = -1.0  # teacher descriptor (-1, 0); D = S - T = (2, 0) on every cell
    t[0, 0, 3, 3] = 1.0  # one background cell where D = 0 (keeps the two bg rules apart)
    pgm = loss.pgm
    pgm.proto_s[0, 1, 0] = torch.tensor([1.0, 0.0])  # cos_s = 1
    pgm.proto_t[0, 1, 0] = torch.tensor([1.0, 0.0])  # cos_t = -1 -> r = 1 - 2 = -1
    pgm.proto_valid[0, 1, 0] = True
    pgm.num_generated += 1
    ctx = DistillContext(None, None, [_sample([[0, 0, 4, 4]], [1])], (s, ), (t, ),
                         progress=TrainProgress(max_epochs=12))
    out = loss(ctx)
    # the box covers cells rows/cols 0-1 (stride 2); cell (3, 3) has D = 0
    if negative_r == 'keep':  # released: the box paints r = -1 (fg < 0), bg weight 1 - r = 2
        fg, bg = -16.0, (11 * 4 + 4 * 2 * 4) / (2 * 2 * (12 + 4 * 2))
    else:  # clamp: nothing painted positive; every cell is background
        fg, bg = 0.0, 15 * 4 / (2 * 2 * 16)
    assert out['fg'].item() == pytest.approx(fg)
    assert out['bg'].item() == pytest.approx(bg)


def test_relation_term_hand_value():
    loss = _gt_loss(fg_weight=0.0, bg_weight=0.0, relation_weight=1.0)
    pgm = loss.pgm
    pgm.proto_s[0, 0, 0] = torch.tensor([1.0, 0.0])
    pgm.proto_t[0, 0, 0] = torch.tensor([1.0, 0.0])
    pgm.proto_s[0, 2, 0] = torch.tensor([0.0, 1.0])
    pgm.proto_t[0, 2, 0] = torch.tensor([0.0, 1.0])
    pgm.proto_valid[0, [0, 2], 0] = True
    pgm.num_generated += 1
    s = torch.zeros(1, 2, 4, 4)
    s[0, 0] = 1.0  # student desc (1, 0): sims to all prototypes (1, 0)
    t = torch.zeros(1, 2, 4, 4)
    t[0, 0] = 1.0
    t[0, 1] = 1.0  # teacher desc (1, 1)/sqrt2: sims (0.707, 0.707)
    ctx = DistillContext(None, None, [_sample([[0, 0, 4, 4]], [0])], (s, ), (t, ),
                         progress=TrainProgress(max_epochs=12))
    c = 2 ** -0.5
    r = 1 - abs(1 - c)  # class 0: best student cos 1, best teacher cos c
    want = F.smooth_l1_loss(r * torch.tensor([1.0, 0.0]), r * torch.tensor([c, c])).item()
    assert loss(ctx)['rel'].item() == pytest.approx(want, rel=1e-5)


def test_online_bank_ring_buffer_and_refresh():
    loss = _gt_loss()
    loss.train()
    s, t = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4)
    ctx = DistillContext(None, None, [_sample([[0, 0, 4, 4], [4, 4, 8, 8]], [1, 1])], (s, ),
                         (t, ), progress=TrainProgress(epoch=0, max_epochs=12))
    for _ in range(60):
        loss(ctx)
    k = loss.bank_s.shape[2]
    assert int(loss.bank_count[0, 1]) == 120 and loss.bank_count[0, 0] == 0 and k == 100
    assert not loss.pgm.ready
    loss(DistillContext(None, None, ctx.data_samples, (s, ), (t, ),
                        progress=TrainProgress(epoch=1, max_epochs=12)))
    assert loss.pgm.ready and int(loss.last_refresh_epoch) == 1
    assert loss.pgm.proto_valid[0, 1].all() and not loss.pgm.proto_valid[0, 0].any()


def _frcnn_student():
    """The synthetic Faster R-CNN student (64-channel P2-P6 FPN, 8 classes, RoI extractor on
    P2-P5 with finest scale 56): what ``setup`` reads for the two-stage soft label."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    from conftest import REPO, STUDENT_CFG
    register_all_modules()
    return MODELS.build(Config.fromfile(f'{REPO}/{STUDENT_CFG}').model)


class _TeacherRoIs(DistillContext):
    """A step whose teacher RoI branch returns given per-RoI outputs (``teacher_roi_forward``
    is the context's public seam): the rows of the asked RoIs among ``all_rois``."""

    def __init__(self, *args, all_rois, teacher_out, **kwargs):
        super().__init__(*args, **kwargs)
        self._all_rois, self._teacher_out = all_rois, teacher_out

    def teacher_roi_forward(self, rois):
        rows = [int((self._all_rois == r).all(1).nonzero()) for r in rois]
        return {k: v[rows] for k, v in self._teacher_out.items()}


def _unit(*v, c=64):
    x = torch.zeros(c)
    x[:len(v)] = torch.tensor(v)
    return x


def test_soft_label_is_weighted_by_each_rois_robustness():
    """The module's two-stage soft label (forward, not the helper): each positive RoI's
    class-mean KL is multiplied by its own r, computed from the 7x7 RoI features averaged over
    space and the prototypes of its class at its RoI level. RoI 1 has ss < st, so the |.| of
    r matters there; the negative RoI must not contribute."""
    from mmdet.models.task_modules import AssignResult, SamplingResult

    from mmkd.models.distill_context import StudentRoIs
    student = _frcnn_student()
    loss = RobustDistillingModule(boxes='pos_rois', fg_weight=0.0, bg_weight=0.0,
                                  soft_weight=1.5, temperature=2.0, feat_schedule={})
    loss.setup(student, student)
    pgm = loss.pgm  # level 0 (P2, the RoI level of boxes under 112 px)
    pgm.proto_s[0, 0, 0], pgm.proto_t[0, 0, 0] = _unit(1, 0), _unit(1, 0)
    pgm.proto_s[0, 1, 0], pgm.proto_t[0, 1, 0] = _unit(1, 0), _unit(0, 1)
    pgm.proto_valid[0, :2, 0] = True
    pgm.num_generated += 1
    # RoI 0 (class 0): student mean (1, 0) -> ss = 1; teacher (1, 1) -> st = 1/sqrt2
    # RoI 1 (class 1): student (1, 1) -> ss = 1/sqrt2; teacher (1, 3) -> st = 3/sqrt10 > ss
    ss = [1.0, 2 ** -0.5]
    st = [2 ** -0.5, 3 / 10 ** 0.5]
    r = [1 - abs(a - b) for a, b in zip(ss, st)]  # 0.7071, 0.7584
    feat_s = torch.stack([_unit(1, 0), _unit(1, 1), _unit(5, -2)])[:, :, None, None]
    feat_t = torch.stack([_unit(1, 1), _unit(1, 3), _unit(-3, 1)])[:, :, None, None]
    boxes = torch.tensor([[0., 0., 20., 20.], [10., 10., 40., 30.], [30., 0., 60., 20.]])
    assign = AssignResult(2, torch.tensor([1, 2, 0]), torch.ones(3),
                          labels=torch.tensor([0, 1, -1]))
    sres = SamplingResult(torch.tensor([0, 1]), torch.tensor([2]), boxes, boxes[:2], assign,
                          torch.zeros(3, dtype=torch.uint8))
    rois = torch.cat([torch.zeros(3, 1), boxes], 1)
    z_s = torch.tensor([[1.0, 0.0, -1.0] + [0.0] * 6, [0.5, 0.5, 0.0] + [0.2] * 6,
                        [9.0] * 9]).requires_grad_(True)
    z_t = torch.tensor([[2.0, 0.0, 0.0] + [-1.0] * 6, [0.0, 1.0, 0.0] + [0.5] * 6, [0.0] * 9])
    ds = DetDataSample(metainfo=dict(img_shape=(64, 64), batch_input_shape=(64, 64)))
    feats = tuple(torch.zeros(1, 64, 64 // s, 64 // s) for s in (4, 8, 16, 32, 64))
    ctx = _TeacherRoIs(student, None, [ds], feats, feats,
                       progress=TrainProgress(max_epochs=12),
                       student_rois=StudentRoIs([sres], rois, z_s, torch.zeros(3, 36),
                                                feat_s.expand(-1, -1, 7, 7)),
                       all_rois=rois,
                       teacher_out=dict(cls_score=z_t, bbox_feats=feat_t.expand(-1, -1, 7, 7)))
    got = loss(ctx)['soft']
    # class-mean KL(softmax(z_t / 2) || softmax(z_s / 2)) * T^2 of each positive, written out
    want = 0.0
    for i in range(2):
        pt = [math.exp(v / 2) for v in z_t[i].tolist()]
        ps = [math.exp(v / 2) for v in z_s[i].tolist()]
        pt, ps = [v / sum(pt) for v in pt], [v / sum(ps) for v in ps]
        kl = sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, ps))
        want += r[i] * kl * 4 / 9
    want = 1.5 * want / 2
    assert got.item() == pytest.approx(want, rel=1e-5)
    got.backward()
    assert z_s.grad[:2].abs().sum() > 0 and not z_s.grad[2].any()


class _DenseHead(nn.Module):
    """What ``setup`` reads from an anchor-based head: num_classes and a get_targets."""

    def __init__(self, k):
        super().__init__()
        self.num_classes = k

    def get_targets(self, *args, **kwargs):  # pragma: no cover - never called here
        raise AssertionError('the recorded targets are given')


def test_one_stage_soft_label_is_weighted_by_each_anchors_robustness():
    """RetinaNet path: the positive anchors' class-mean softmax KL (T = 2), each times the r of
    its own anchor at its own level (integer-crop descriptors of the anchor box). Anchor A
    (class 0) has ss > st, anchor B (class 1) ss < st."""
    from mmkd.models.distill_context import StudentDenseTargets
    det = _Det(c=2, n=1, k=2)
    det.bbox_head = _DenseHead(2)
    loss = RobustDistillingModule(boxes='pos_anchors', fg_weight=0.0, bg_weight=0.0,
                                  soft_weight=1.0, temperature=2.0, feat_schedule={},
                                  strides=[8])
    loss.setup(det, det)
    pgm = loss.pgm
    pgm.proto_s[0, 0, 0], pgm.proto_t[0, 0, 0] = torch.tensor([1., 0.]), torch.tensor([1., 0.])
    pgm.proto_s[0, 1, 0], pgm.proto_t[0, 1, 0] = torch.tensor([1., 0.]), torch.tensor([0., 1.])
    pgm.proto_valid[0, :2, 0] = True
    pgm.num_generated += 1
    # 32 x 32 input, one 4 x 4 level (stride 8), one anchor per cell. Anchor A = [0, 0, 8, 8]
    # crops cells 0..1 x 0..1 (both ends inclusive), anchor B = [16, 16, 24, 24] cells 2..3.
    s = torch.zeros(1, 2, 4, 4)
    t = torch.zeros(1, 2, 4, 4)
    s[0, :, :2, :2] = torch.tensor([1., 0.])[:, None, None]  # ss_A = 1
    t[0, :, :2, :2] = torch.tensor([1., 1.])[:, None, None]  # st_A = 1/sqrt2
    s[0, :, 2:, 2:] = torch.tensor([1., 1.])[:, None, None]  # ss_B = 1/sqrt2
    t[0, :, 2:, 2:] = torch.tensor([1., 3.])[:, None, None]  # st_B = 3/sqrt10
    r = [1 - abs(1 - 2 ** -0.5), 1 - abs(2 ** -0.5 - 3 / 10 ** 0.5)]
    ys, xs = torch.meshgrid(torch.arange(4.), torch.arange(4.), indexing='ij')
    anchors = torch.stack([xs, ys, xs + 1, ys + 1], -1).view(16, 4) * 8
    labels = torch.full((1, 16), 2)
    labels[0, 0], labels[0, 10] = 0, 1  # A is cell (0, 0), B cell (2, 2)
    s_cls = torch.zeros(1, 2, 4, 4)
    t_cls = torch.zeros(1, 2, 4, 4)
    s_cls[0, :, 0, 0], t_cls[0, :, 0, 0] = torch.tensor([1.0, -1.0]), torch.tensor([-0.5, 2.0])
    s_cls[0, :, 2, 2], t_cls[0, :, 2, 2] = torch.tensor([0.0, 2.0]), torch.tensor([3.0, 0.0])
    s_cls.requires_grad_(True)
    dense = StudentDenseTargets([[anchors]], [labels], [torch.ones(1, 16)], [s_cls],
                                [torch.zeros(1, 4, 4, 4)], 2)
    ds = DetDataSample(metainfo=dict(img_shape=(32, 32), batch_input_shape=(32, 32)))
    ctx = DistillContext(det, det, [ds], (s, ), (t, ), progress=TrainProgress(max_epochs=12),
                         student_dense=dense,
                         teacher_head_outs=([t_cls], [torch.zeros(1, 4, 4, 4)]))
    got = loss(ctx)['soft']
    want = 0.0
    for ri, (zs, zt) in zip(r, [((1.0, -1.0), (-0.5, 2.0)), ((0.0, 2.0), (3.0, 0.0))]):
        ps = [math.exp(v / 2) for v in zs]
        pt = [math.exp(v / 2) for v in zt]
        ps, pt = [v / sum(ps) for v in ps], [v / sum(pt) for v in pt]
        want += ri * 4 * sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, ps))
    want /= 2 * 2  # mean over the 2 anchors and the 2 classes
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_robustness_uses_the_absolute_gap_either_way_round():
    """r = 1 - |ss - st|: a student closer to its prototypes than the teacher (ss > st) and
    the reverse (ss < st) give the same r, painted into the fg mask."""
    outs = []
    for student_first in (True, False):
        loss = _gt_loss(fg_weight=1.0, bg_weight=0.0)
        s = torch.zeros(1, 2, 4, 4)
        t = torch.zeros(1, 2, 4, 4)
        near, far = (s, t) if student_first else (t, s)
        near[0, 0] = 1.0  # descriptor (1, 0): cos 1 with the prototype (1, 0)
        far[0, 0] = 1.0
        far[0, 1] = 1.0  # descriptor (1, 1): cos 1/sqrt2
        pgm = loss.pgm
        pgm.proto_s[0, 1, 0] = torch.tensor([1.0, 0.0])
        pgm.proto_t[0, 1, 0] = torch.tensor([1.0, 0.0])
        pgm.proto_valid[0, 1, 0] = True
        pgm.num_generated += 1
        ctx = DistillContext(None, None, [_sample([[0, 0, 4, 4]], [1])], (s, ), (t, ),
                             progress=TrainProgress(max_epochs=12))
        info = loss.inspect(ctx, [torch.tensor([[0., 0., 4., 4.]])], torch.tensor([1]))
        outs.append((info['r'].item(), loss(ctx)['fg'].item()))
    r = 1 - (1 - 2 ** -0.5)
    # D = S - T = -+(0, 1) on every cell; the 4 box cells are painted with r
    fg = r * 4 * 1 / max(1, 2 * 2 * 4 * r)
    for got_r, got_fg in outs:
        assert got_r == pytest.approx(r, rel=1e-6)
        assert got_fg == pytest.approx(fg, rel=1e-5)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match='unknown pgm settings'):
        RobustDistillingModule(pgm=dict(modes='online'))
    with pytest.raises(ValueError, match="'offline', 'online'"):
        RobustDistillingModule(pgm=dict(mode='cached'))
    for option, valid in (('descriptor', "'int_crop', 'roi_align'"),
                          ('mask_painting', "'int_overwrite', 'cover_max'"),
                          ('negative_r', "'keep', 'clamp'")):
        with pytest.raises(ValueError, match=f"{option}='bad' is not valid; choose one of "
                                             f"{valid}"):
            RobustDistillingModule(**{option: 'bad'})
    with pytest.raises(ValueError, match='strides has 2 entries'):
        RobustDistillingModule(boxes='gt', soft_weight=0, strides=[8, 16]).setup(_Det(n=5),
                                                                               _Det(n=5))
    with pytest.raises(ValueError, match='levels'):
        RobustDistillingModule(boxes='gt', soft_weight=0).setup(_Det(n=5), _Det(n=4))


def test_vectorised_bank_push_equals_a_per_instance_ring_buffer():
    loss = RobustDistillingModule(boxes='gt', soft_weight=0.0,
                                  pgm=dict(mode='online', bank_size=4))
    loss.setup(_Det(c=2, n=2, k=3), _Det(c=2, n=2, k=3))
    ref = torch.zeros(2, 3, 4, 2)
    cnt = torch.zeros(2, 3, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    for n in (3, 7, 0, 2, 9, 1):  # 7 and 9 overflow a class's 4 slots within one step
        lab = torch.randint(0, 3, (n, ), generator=g)
        gs = [torch.randn(n, 2, generator=g) for _ in range(2)]
        loss._bank_push(gs, [x * 2 for x in gs], lab)
        for lvl in range(2):
            for c in range(3):
                for j in (lab == c).nonzero(as_tuple=True)[0][-4:]:
                    ref[lvl, c, cnt[lvl, c] % 4] = gs[lvl][j]
                    cnt[lvl, c] += 1
    assert torch.equal(loss.bank_s, ref) and torch.equal(loss.bank_t, 2 * ref)
    assert torch.equal(loss.bank_count, cnt)


# ---- descriptor and painting conventions ------------------------------------------------------
def test_int_crop_descriptor_is_the_inclusive_integer_cell_mean_with_equal_gradients():
    feat = torch.arange(2 * 36, dtype=torch.float32).view(1, 2, 6, 6).requires_grad_(True)
    # stride 2: x cells int(3/2)=1 .. int(9/2)=4, y cells int(5/2)=2 .. int(11/2)=5 (inclusive)
    rois = torch.tensor([[0, 3.0, 5.0, 9.0, 11.0],
                         [0, -3.0, 0.0, 1.0, 30.0]])  # x: |-3|/2 -> 1, 1/2 -> 0 kept at 1;
    # y: 0 .. int(30/2) = 15, clipped to row 5
    desc = box_descriptors([feat], rois, (12, 12), 'int_crop')[0]
    torch.testing.assert_close(desc[0], feat[0, :, 2:6, 1:5].mean((1, 2)))
    torch.testing.assert_close(desc[1], feat[0, :, 0:6, 1:2].mean((1, 2)))
    desc[0].sum().backward()
    want = torch.zeros(1, 2, 6, 6)
    want[0, :, 2:6, 1:5] = 1 / 16
    torch.testing.assert_close(feat.grad, want)


def test_roi_align_descriptor_option_is_the_bilinear_mean_over_the_box():
    # a map equal to its column index: the bilinear mean over a box is the value at the box
    # centre, (x1 + x2) / (2 s) - 0.5 in cell units; the integer crop averages whole cells
    feat = torch.arange(8, dtype=torch.float32).repeat(1, 1, 8, 1)
    rois = torch.tensor([[0, 2.0, 2.0, 10.0, 10.0]])
    assert box_descriptors([feat], rois, (16, 16), 'roi_align')[0].item() == \
        pytest.approx(2.5, abs=1e-5)
    assert box_descriptors([feat], rois, (16, 16), 'int_crop')[0].item() == \
        pytest.approx(3.0)  # cells 1..5
    assert box_descriptors([feat], rois, (16, 16), 'int_crop', strides=[4])[0].item() == \
        pytest.approx(1.0)  # cells int(2/4)=0 .. int(10/4)=2 with a given stride of 4


def _paint_sequential(boxes, values, hw, s):
    """The released painting written box by box (an independent reference)."""
    mask = torch.zeros(hw)
    for (x1, y1, x2, y2), v in zip(boxes.tolist(), values.tolist()):
        cx1, cy1 = int(x1 / s), int(y1 / s)
        cx2, cy2 = min(int(x2 / s), hw[1]), min(int(y2 / s), hw[0])
        if cx2 <= cx1 or cy2 <= cy1:
            r, c = min(max(cy1, 0), hw[0] - 1), min(max(cx1, 0), hw[1] - 1)
            mask[r, c] = max(mask[r, c].item(), v)
        else:
            mask[cy1:cy2, cx1:cx2] = v
    return mask


def test_released_painting_hand_case():
    boxes = torch.tensor([[0., 0., 16., 16.],  # r .5 on cells 0..3
                          [8., 8., 20., 20.],  # r .2 on cells 2..4: overwrites (2..3, 2..3)
                          [20., 20., 22., 30.],  # x cells 5..4 empty: cell (5, 5) = max(0, .9)
                          [9., 9., 10., 10.],  # degenerate at (2, 2): max(.2, .1) stays .2
                          [12., 12., 13., 13.],  # degenerate at (3, 3): max(.2, .7) = .7
                          [12., 12., 16., 16.],  # cell 3 only: overwrites (3, 3) with .3
                          [24., 0., 31., 3.]])  # y cells 0..-1 empty: (0, 6) = max(0, -.4)
    r = torch.tensor([.5, .2, .9, .1, .7, .3, -.4])
    want = torch.zeros(8, 8)
    want[0:4, 0:4] = .5
    want[2:5, 2:5] = .2
    want[5, 5] = .9
    want[3, 3] = .3
    got = paint_box_mask_overwrite(boxes, (8, 8), (4, 4), r)
    torch.testing.assert_close(got, want)
    # the end is exclusive: a box ending inside cell 3 covers cells 0..2 only
    assert paint_box_mask_overwrite(torch.tensor([[0., 0., 15., 15.]]), (8, 8), (4, 4),
                                    torch.ones(1)).sum() == 9
    # mmkd's cover_max option: every overlapped cell, the larger r wins, order-free
    cover = RobustDistillingModule.paint_masks(
        torch.cat([torch.zeros(7, 1), boxes], 1), [r], torch.zeros(7, dtype=torch.long),
        [(8, 8)], 1, (32, 32), painting='cover_max')[0][0]
    assert cover[3, 3].item() == pytest.approx(.7) and cover[2, 2].item() == pytest.approx(.5)
    assert cover[5, 5].item() == pytest.approx(.9)
    assert cover[0, 6].item() == pytest.approx(-.4)  # floor..ceil covers row 0: painted


def test_released_painting_equals_box_by_box_painting_on_random_boxes():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        n = int(torch.randint(1, 30, (1, ), generator=g))
        xy = torch.rand(n, 2, generator=g) * 60
        wh = torch.rand(n, 2, generator=g) * 30 * (torch.rand(n, 1, generator=g) > 0.2)
        boxes = torch.cat([xy, xy + wh], 1)
        vals = torch.rand(n, generator=g) * 2 - 0.5
        torch.testing.assert_close(paint_box_mask_overwrite(boxes, (9, 11), (6, 6), vals),
                                   _paint_sequential(boxes, vals, (9, 11), 6))
