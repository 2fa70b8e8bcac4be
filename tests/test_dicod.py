"""DICOD: differentiable crops, the zero-background KL target, gradient paths, the classifier
teacher tool and its checkpoint as a DistillDetector teacher."""
import copy
import math
import os.path as osp

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmdet.utils import register_all_modules
from mmengine.config import Config

from conftest import REPO, run_tool
from mmkd.models.methods.dicod import (CropClassifier, DICODLoss, crop_and_resize, dicod_cls_kl,
                                       teacher_target)
from mmkd.utils.torch_compat import safe_torch_load

SSD_KD = 'configs/synthetic/kd_dicod_r18w16cls_ssd160_r18w16_12e_synthetic.py'
FRCNN_KD = 'configs/synthetic/kd_dicod_r18w16cls_r18w16_12e_synthetic.py'
CLS_CFG = 'configs/synthetic/cls_teacher_r18w16_synthetic.py'


def build_kd(path: str, **loss_overrides) -> torch.nn.Module:
    register_all_modules()
    cfg = Config.fromfile(osp.join(REPO, path))
    cfg.model.teacher_ckpt = None
    cfg.model.distill_losses.loss_dicod.update(loss_overrides)
    return MODELS.build(cfg.model)


def batch(model, seed: int = 0):
    torch.manual_seed(seed)
    packed = demo_mm_inputs(2, [[3, 128, 128], [3, 96, 128]], num_items=[3, 2], num_classes=8,
                            use_box_type=False)
    return model.data_preprocessor(packed, True)


def grad_sum(module: torch.nn.Module) -> float:
    return float(sum(p.grad.abs().sum() for p in module.parameters() if p.grad is not None))


# ---- crop ------------------------------------------------------------------------------------
def test_crop_equals_the_image_region():
    img = torch.randn(2, 3, 20, 24)
    boxes = torch.tensor([[3., 5., 11., 13.], [0., 0., 8., 8.], [16., 12., 24., 20.]])
    crops = crop_and_resize(img, boxes, 8, torch.tensor([0, 1, 1]))
    assert crops.shape == (3, 3, 8, 8)
    torch.testing.assert_close(crops[0], img[0, :, 5:13, 3:11], atol=1e-5, rtol=0)
    torch.testing.assert_close(crops[1], img[1, :, 0:8, 0:8], atol=1e-5, rtol=0)
    torch.testing.assert_close(crops[2], img[1, :, 12:20, 16:24], atol=1e-5, rtol=0)
    # a 2x downscale of an aligned box averages 2x2 pixel blocks (bilinear at block centres)
    half = crop_and_resize(img[:1], torch.tensor([[4., 4., 12., 12.]]), 4)
    want = torch.nn.functional.avg_pool2d(img[:1, :, 4:12, 4:12], 2)
    torch.testing.assert_close(half, want, atol=1e-5, rtol=0)


def test_crop_is_differentiable_in_the_box_and_clamped_to_the_image():
    ramp = torch.arange(32.).repeat(1, 3, 16, 1)  # value = x + 0.5 at pixel centres - 0.5
    box = torch.tensor([[4., 2., 12., 10.]], requires_grad=True)
    crop = crop_and_resize(ramp, box, 4)
    crop.mean().backward()
    # mean of the crop = mean x of the box - 0.5, so d/dx1 = d/dx2 = 0.5 and no y dependence
    torch.testing.assert_close(box.grad, torch.tensor([[0.5, 0.0, 0.5, 0.0]]), atol=1e-4, rtol=0)
    # boxes reaching outside the valid image are clamped to it (padding is never sampled)
    out = crop_and_resize(ramp, torch.tensor([[-8., 0., 8., 16.]]), 8, img_shapes=[(16, 20)])
    inside = crop_and_resize(ramp, torch.tensor([[0., 0., 8., 16.]]), 8)
    torch.testing.assert_close(out, inside)


def test_crop_clamp_and_padding_options():
    """The release clamps one side at a time to the padded tensor (x1, y1 >= 0, x2 <= W,
    y2 <= H) and pads with zeros; mmkd's own option clamps every coordinate into img_shape and
    pads with the border."""
    ramp = torch.arange(20.).repeat(1, 1, 16, 1)  # 1 x 1 x 16 x 20, value = column index

    def crop(box, size=2, **kw):
        return crop_and_resize(ramp, torch.tensor([box]), size, **kw)

    # a box sticking out on the left or right is cut at the image edge
    torch.testing.assert_close(crop([-4., 0., 4., 16.], clamp='one_sided', padding_mode='zeros'),
                               crop([0., 0., 4., 16.]))
    torch.testing.assert_close(crop([18., 0., 22., 16.], clamp='one_sided',
                                    padding_mode='zeros'), crop([18., 0., 20., 16.]))
    # entirely right of the image: x2 is cut to W = 20 but x1 stays at 24, so the box inverts
    # and samples x = 23, 21 (outside): zeros. Two-sided clamping collapses it onto the edge
    # (x = 20) and the border padding repeats the last column (19).
    outside = [24., 0., 28., 16.]
    assert crop(outside, clamp='one_sided', padding_mode='zeros').abs().max() == 0
    torch.testing.assert_close(crop(outside, clamp='two_sided', padding_mode='border',
                                    img_shapes=[(16, 20)]), torch.full((1, 1, 2, 2), 19.))
    with pytest.raises(ValueError, match='clamp must be one of'):
        crop(outside, clamp='both')
    with pytest.raises(ValueError, match='padding_mode must be one of'):
        crop(outside, padding_mode='edge')
    loss = DICODLoss()
    assert (loss.padding_mode, loss.box_clamp) == ('zeros', 'one_sided')  # the release
    with pytest.raises(ValueError, match='box_clamp'):
        DICODLoss(box_clamp='inside')


# ---- classification target -------------------------------------------------------------------
def test_kl_target_has_zero_background_mass_and_matches_the_formula():
    t = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    s = torch.tensor([[1.0, 0.5, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0]])
    target = teacher_target(t, 2.0)
    assert target.shape == (2, 4)
    assert torch.all(target[:, -1] == 0)
    # softmax(t / T) written out for row 0 (T = 2): exp(1), exp(0), exp(-0.5) normalised
    e = [math.exp(1.0), 1.0, math.exp(-0.5)]
    torch.testing.assert_close(target[0, :3], torch.tensor([v / sum(e) for v in e]))
    torch.testing.assert_close(target[1, :3], torch.full((3, ), 1 / 3))
    eps = 1e-10
    ps = torch.softmax(s / 2, 1)
    q = torch.tensor([[v / sum(e) for v in e] + [0.0], [1 / 3, 1 / 3, 1 / 3, 0.0]])
    want = ((q + eps) * ((q + eps).log() - (ps + eps).log())).sum(1)
    torch.testing.assert_close(dicod_cls_kl(s, t, 2.0, eps), want)
    # a student matching the target on the classes with no background mass has ~0 loss
    s_match = torch.cat([t / 1.0, torch.full((2, 1), -1e4)], 1)
    assert dicod_cls_kl(s_match, t, 1.0).abs().max() < 1e-5
    with pytest.raises(ValueError, match='C \\+ 1'):
        dicod_cls_kl(s[:, :3], t)


# ---- gradient paths on a distillation step ---------------------------------------------------
@pytest.mark.parametrize('path', [SSD_KD, FRCNN_KD], ids=['ssd', 'faster_rcnn'])
def test_loc_gradient_reaches_box_regression_not_the_teacher(path):
    model = build_kd(path, cls_weight=0.0, chunk_size=4)  # small chunks: several of them
    data = batch(model)
    losses = model(**data, mode='loss')
    assert float(losses['loss_dicod_loc']) > 0 and float(losses['loss_dicod_cls']) == 0
    model.zero_grad()
    losses['loss_dicod_loc'].backward()
    if getattr(model.student, 'with_roi_head', False):
        reg, cls = model.student.roi_head.bbox_head.fc_reg, model.student.roi_head.bbox_head.fc_cls
    else:
        reg, cls = model.student.bbox_head.reg_convs, model.student.bbox_head.cls_convs
    assert grad_sum(reg) > 0
    assert grad_sum(cls) == 0
    assert all(not p.requires_grad and p.grad is None for p in model.teacher.parameters())
    assert not model.teacher.training and model.training


def test_chunking_and_checkpointing_do_not_change_the_loss_or_gradients():
    model = build_kd(SSD_KD)
    data = batch(model, seed=1)
    results = []
    for chunk, ckpt in ((256, False), (3, True)):
        for loss in model.distill_losses.values():
            loss.chunk_size, loss.checkpoint_chunks = chunk, ckpt
        model.zero_grad()
        torch.manual_seed(0)
        losses = model(**copy.deepcopy(data), mode='loss')
        (losses['loss_dicod_loc'] + losses['loss_dicod_cls']).backward()
        results.append((losses['loss_dicod_loc'].detach(), losses['loss_dicod_cls'].detach(),
                        torch.cat([p.grad.flatten()
                                   for p in model.student.bbox_head.reg_convs.parameters()])))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_cls_term_needs_a_softmax_head_and_a_classifier_teacher():
    with pytest.raises(TypeError, match='CropClassifier'):
        DICODLoss().setup(torch.nn.Module(), torch.nn.Module())
    register_all_modules()
    retina = MODELS.build(dict(
        Config.fromfile(osp.join(REPO, 'configs/synthetic/ssd160_r18w16_12e_synthetic.py')).model,
        bbox_head=dict(type='RetinaHead', num_classes=8, in_channels=32, feat_channels=32,
                       stacked_convs=1, anchor_generator=dict(
                           type='AnchorGenerator', octave_base_scale=4, scales_per_octave=1,
                           ratios=[1.0], strides=[8, 16, 32, 64]),
                       bbox_coder=dict(type='DeltaXYWHBBoxCoder'),
                       loss_cls=dict(type='FocalLoss', use_sigmoid=True),
                       loss_bbox=dict(type='L1Loss')),
        neck=dict(type='FPN', in_channels=[32, 64, 128], out_channels=32, num_outs=4),
        train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4,
                                     min_pos_iou=0, ignore_iof_thr=-1),
                       sampler=dict(type='PseudoSampler'), allowed_border=-1, pos_weight=-1)))
    teacher = MODELS.build(Config.fromfile(osp.join(REPO, CLS_CFG)).model)
    with pytest.raises(ValueError, match='cls_weight=0'):
        DICODLoss().setup(retina, teacher)
    DICODLoss(cls_weight=0.0).setup(retina, teacher)  # localisation only is fine


def test_teacher_input_conversion_is_applied():
    # a teacher trained on SSD's convention (std 1) under an ImageNet-normalised student
    register_all_modules()
    cfg = Config.fromfile(osp.join(REPO, SSD_KD))
    cfg.model.teacher_ckpt = None
    cfg.model.teacher = dict(config=CLS_CFG, data_preprocessor=dict(std=[1.0, 1.0, 1.0]))
    model = MODELS.build(cfg.model)
    assert not model.teacher_inputs.identity
    x = torch.randn(1, 3, 8, 8)
    y = model.teacher_inputs(x, [(8, 8)])
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    torch.testing.assert_close(y, x * std, atol=1e-3, rtol=1e-5)
    losses = model(**batch(model), mode='loss')
    assert torch.isfinite(losses['loss_dicod_loc']) and torch.isfinite(losses['loss_dicod_cls'])


# ---- the classifier teacher tool -------------------------------------------------------------
def test_train_cls_teacher_tool_and_its_checkpoint_loads_as_the_teacher(synthetic_data,
                                                                         tmp_path):
    root = synthetic_data['data_root'].rstrip('/') + '/'
    work = tmp_path / 'cls'
    proc = run_tool(['tools/train_cls_teacher.py', CLS_CFG, '--work-dir', str(work),
                     '--epochs', '2', '--cfg-options',
                     f'train_dataloader.dataset.data_root={root}',
                     f'val_dataloader.dataset.data_root={root}',
                     'model.backbone.base_channels=8', 'crop_cfg.crop_size=32',
                     'cls_train_cfg.batch_size=16'], timeout=300)
    assert '"top1"' in proc.stdout
    ckpt = work / 'cls_teacher.pth'
    assert ckpt.is_file() and (work / 'metrics.json').is_file()
    # loads strictly as the DICOD teacher (same overrides as the training run)
    register_all_modules()
    cfg = Config.fromfile(osp.join(REPO, SSD_KD))
    cfg.model.teacher = dict(config=CLS_CFG, backbone=dict(base_channels=8))
    cfg.model.teacher_ckpt = str(ckpt)
    cfg.model.distill_losses.loss_dicod.crop_size = 32
    model = MODELS.build(cfg.model)
    assert isinstance(model.teacher, CropClassifier)
    saved = safe_torch_load(str(ckpt))['state_dict']
    for k, v in model.teacher.state_dict().items():
        torch.testing.assert_close(v, saved[k])
    assert not any(k.startswith('teacher') for k in model.state_dict())
    losses = model(**batch(model), mode='loss')
    assert torch.isfinite(losses['loss_dicod_cls'])


@pytest.mark.parametrize('path,normaliser', [(SSD_KD, 'positives'), (FRCNN_KD, 'sampled RoIs')],
                         ids=['ssd', 'faster_rcnn'])
def test_terms_are_divided_by_the_detectors_own_classification_normaliser(path, normaliser,
                                                                          monkeypatch):
    """SSD: sum over the images of max(positives, 1), the release's (mmdet 2.x SSD's) normaliser;
    R-CNN: the number of sampled RoIs, which its own losses average over (dividing by the
    positives collapsed an R-CNN head in training)."""
    import mmkd.models.methods.dicod.dicod_loss as dl
    seen = {}
    real_kl = dl.dicod_cls_kl

    def spy_kl(*args, **kwargs):  # the real function; keep its per-row output
        seen['rows'] = real_kl(*args, **kwargs)
        return seen['rows']

    monkeypatch.setattr(dl, 'dicod_cls_kl', spy_kl)
    model = build_kd(path, loc_weight=0.0)
    loss = next(iter(model.distill_losses.values()))
    real_roi = loss._roi_positives
    if loss.two_stage:
        def spy_roi(ctx):
            seen['sampled'] = int(ctx.student_rois.rois.shape[0])
            return real_roi(ctx)
        monkeypatch.setattr(loss, '_roi_positives', spy_roi)
    data = batch(model)
    if normaliser == 'positives':  # an image without GT has no positives and counts as 1
        data['data_samples'][1].gt_instances = data['data_samples'][1].gt_instances[:0]
    out = model(**data, mode='loss')['loss_dicod_cls']
    n_rows = seen['rows'].numel()
    assert n_rows > 0
    norm = seen['sampled'] if normaliser == 'sampled RoIs' else n_rows + 1
    if normaliser == 'sampled RoIs':
        assert norm > n_rows  # negatives are sampled too
    expected = loss.cls_weight * loss.temperature ** 2 * seen['rows'].sum() / norm
    torch.testing.assert_close(out, expected)


def test_ssd_loc_term_is_divided_by_the_release_normaliser_not_the_positives():
    """SSD: the loc term (like cls) is divided by sum_i max(n_i, 1); with an image without GT
    that is the positive count + 1. The same positives given with ``avg_factor=0`` (the
    positive count) scale the term by exactly that ratio."""
    import dataclasses

    from mmkd.models.utils import MethodRecorder
    model = build_kd(SSD_KD, cls_weight=0.0)
    loss = next(iter(model.distill_losses.values()))
    data = batch(model)
    data['data_samples'][1].gt_instances = data['data_samples'][1].gt_instances[:0]
    with MethodRecorder(loss, '_dense_positives') as pos_rec, \
            MethodRecorder(loss, 'forward') as fwd_rec:
        real = model(**data, mode='loss')['loss_dicod_loc']
    pos = pos_rec.calls[0][2]
    n_pos = int(pos.batch_idx.numel())
    assert n_pos > 0 and pos.avg_factor == n_pos + 1
    ctx = fwd_rec.calls[0][0][0]
    by_count = loss(ctx, positives=dataclasses.replace(pos, avg_factor=0))['loc']
    assert float(real) > 0
    torch.testing.assert_close(real * (n_pos + 1), by_count * n_pos)


def _flat_teacher(bias):
    """The synthetic classifier teacher made constant: conv1 zero, so its stem is 0 on every
    crop (BN in eval with running stats 0 / 1, then ReLU), and a zero fc, so every crop gets
    the logits ``bias``."""
    register_all_modules()
    teacher = MODELS.build(Config.fromfile(osp.join(REPO, CLS_CFG)).model).eval()
    torch.nn.init.zeros_(teacher.backbone.conv1.weight)
    torch.nn.init.zeros_(teacher.head.fc.weight)
    teacher.head.fc.bias.data = torch.tensor(bias)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def test_faster_rcnn_terms_equal_a_hand_computation():
    """Two-stage path: the positive RoIs' decoded boxes (zero deltas: the RoI itself) against
    their assigned GT, both terms divided by the number of sampled RoIs (9), not the positives
    (4). The image is the ramp x + 2y, so a crop shifted by (dx, dy) differs by dx + 2 dy on
    every pooled pixel; the constant teacher has a zero stem term and the logits ``b`` on every
    GT crop."""
    from mmdet.models.task_modules import AssignResult, SamplingResult
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    from mmkd.models import DistillContext
    from mmkd.models.distill_context import StudentRoIs
    register_all_modules()
    student = MODELS.build(Config.fromfile(
        osp.join(REPO, 'configs/synthetic/faster_rcnn_r18w16_fpn_12e_synthetic.py')).model)
    b = [2.0, -1.0, 0.0, 0.5, 1.0, 0.0, -2.0, 0.3]
    teacher = _flat_teacher(b)
    loss = DICODLoss(cls_weight=0.4, loc_weight=0.15, temperature=2.0, crop_size=16,
                     pixel_pool=4, stem_pool=2)
    loss.setup(student, teacher)
    assert loss.two_stage
    yy, xx = torch.meshgrid(torch.arange(64.), torch.arange(64.), indexing='ij')
    images = (xx + 2 * yy).expand(2, 3, 64, 64).contiguous()
    gts = [torch.tensor([[10., 10., 30., 26.], [34., 20., 54., 50.]]),
           torch.tensor([[5., 5., 25., 45.]])]
    gt_labels = [torch.tensor([2, 5]), torch.tensor([0])]
    # positives: (RoI, assigned GT index within the image); shifts (2, 0), (0, 1), (-1, -1),
    # (0, 2) -> |dx + 2 dy| = 2, 2, 3, 4
    pos = [[([12., 10., 32., 26.], 0), ([34., 21., 54., 51.], 1), ([33., 19., 53., 49.], 1)],
           [([5., 7., 25., 47.], 0)]]
    negs = [[[0., 40., 8., 60.], [50., 0., 60., 8.], [40., 50., 60., 60.]],
            [[40., 40., 60., 60.], [30., 0., 60., 10.]]]
    sres, samples = [], []
    for i in range(2):
        boxes = torch.tensor([p[0] for p in pos[i]] + negs[i])
        n_pos, n = len(pos[i]), len(pos[i]) + len(negs[i])
        gt_inds = torch.tensor([p[1] + 1 for p in pos[i]] + [0] * len(negs[i]))
        labels = torch.cat([gt_labels[i][gt_inds[:n_pos] - 1],
                            torch.full((n - n_pos, ), -1)])
        assign = AssignResult(len(gts[i]), gt_inds, torch.ones(n), labels=labels)
        sres.append(SamplingResult(torch.arange(n_pos), torch.arange(n_pos, n), boxes, gts[i],
                                   assign, torch.zeros(n, dtype=torch.uint8)))
        ds = DetDataSample(metainfo=dict(img_shape=(64, 64), batch_input_shape=(64, 64)))
        ds.gt_instances = InstanceData(bboxes=gts[i], labels=gt_labels[i])
        samples.append(ds)
    rois = torch.cat([torch.cat([torch.full((len(r.priors), 1), float(i)), r.priors], 1)
                      for i, r in enumerate(sres)])
    assert rois.shape[0] == 9
    z = torch.zeros(9, 9)
    z[[0, 1, 2, 6]] = torch.tensor([[1.0, 0.0, 2.0, -1.0, 0.5, 0.0, 0.0, 1.0, 0.5],
                                    [0.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 1.0],
                                    [-1.0, 0.5, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
                                    [2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0]])
    z.requires_grad_(True)
    deltas = torch.zeros(9, 32, requires_grad=True)
    ctx = DistillContext(student, teacher, samples, (), (),
                         student_rois=StudentRoIs(sres, rois, z, deltas, torch.zeros(9, 64, 7, 7)),
                         batch_inputs=images, teacher_inputs=lambda x: x)
    out = loss(ctx)
    n_sampled = 9
    assert out['loc'].item() == pytest.approx(0.15 * (2 + 2 + 3 + 4) / n_sampled, rel=1e-4)
    # cls: T^2 sum_pos sum_c (q + eps)(log(q + eps) - log(p + eps)), q = [softmax(b / T), 0]
    eps = 1e-10
    e = [math.exp(v / 2) for v in b]
    q = [v / sum(e) for v in e] + [0.0]
    total = 0.0
    for row in (0, 1, 2, 6):
        ps = [math.exp(v / 2) for v in z[row].tolist()]
        ps = [v / sum(ps) for v in ps]
        total += sum((a + eps) * (math.log(a + eps) - math.log(c + eps)) for a, c in zip(q, ps))
    assert out['cls'].item() == pytest.approx(0.4 * 4 * total / n_sampled, rel=1e-5)
    (out['cls'] + out['loc']).backward()
    assert deltas.grad.abs().sum() > 0 and not deltas.grad[[3, 4, 5, 7, 8]].any()
    assert z.grad[[0, 1, 2, 6]].abs().sum() > 0 and not z.grad[[3, 4, 5, 7, 8]].any()
