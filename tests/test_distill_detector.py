"""DistillDetector: building, freezing, strict teacher loading, the loss step."""
import copy

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs

from conftest import STUDENT_CFG, TEACHER_CFG, student_roi_step
from mmkd.models import soft_label_kl
from mmkd.models.utils import MethodRecorder, TeacherInputAdapter
from mmkd.utils import CheckpointMismatchError, load_model_cfg
from mmkd.utils.torch_compat import safe_torch_load

FPN = dict(type='FeatureImitationLoss', adapter='conv1x1', fg_mask='gt')
KL = dict(type='RoIClsKLLoss', temperature=2.0)


def build(teacher_ckpt=None, losses=None, student=STUDENT_CFG, teacher=TEACHER_CFG, **kw):
    losses = dict(loss_kd_fpn=FPN, loss_kd_kl=KL) if losses is None else losses
    return MODELS.build(dict(type='DistillDetector', student=student, teacher=teacher,
                             teacher_ckpt=teacher_ckpt, distill_losses=losses, **kw))


def batch(model, shapes=((3, 96, 96), (3, 64, 80)), num_items=(3, 0), seed=0):
    torch.manual_seed(seed)
    packed = demo_mm_inputs(len(shapes), list(shapes), num_items=list(num_items),
                            num_classes=8, use_box_type=False)
    data = model.data_preprocessor(packed, True)
    return data['inputs'], data['data_samples']


# ---- build forms ------------------------------------------------------------------------------
def test_local_path_dict_and_mmdet_forms(teacher_ckpt):
    m1 = build(teacher_ckpt)
    assert type(m1.student).__name__ == 'FasterRCNN'
    student_dict = load_model_cfg(STUDENT_CFG)
    m2 = build(teacher_ckpt, student=student_dict,
               teacher=dict(config=TEACHER_CFG, test_cfg=dict(rcnn=dict(max_per_img=7))))
    assert m2.teacher.test_cfg.rcnn.max_per_img == 7
    m3 = build(None, losses={}, student=dict(config='mmdet::retinanet/retinanet_r18_fpn_1x_coco.py',
                                             backbone=dict(init_cfg=None)),
               teacher='mmdet::retinanet/retinanet_r18_fpn_1x_coco.py')
    assert type(m3.student).__name__ == 'RetinaNet'
    assert m3.student.bbox_head.num_classes == 80


def test_unknown_config_paths_name_the_fix():
    with pytest.raises(FileNotFoundError, match='Close matches: mmdet::faster_rcnn/faster-rcnn'):
        build(losses={}, teacher='mmdet::faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py')
    with pytest.raises(FileNotFoundError, match='tried'):
        build(losses={}, student='configs/nope.py')


def test_relative_paths_resolve_from_any_directory(tmp_path, monkeypatch, teacher_ckpt):
    monkeypatch.chdir(tmp_path)
    assert type(build(teacher_ckpt).student).__name__ == 'FasterRCNN'


# ---- the teacher: frozen, in eval, outside checkpoints, moves with the model -------------------
def test_teacher_frozen_eval_and_hidden(teacher_ckpt):
    model = build(teacher_ckpt)
    model.train()
    assert model.student.training and model.distill_losses.training
    assert not any(m.training for m in model.teacher.modules())
    assert not any(p.requires_grad for p in model.teacher.parameters())
    assert not any(k.startswith('teacher') for k in model.state_dict())
    ids = {id(p) for p in model.parameters()}
    assert not any(id(p) in ids for p in model.teacher.parameters())
    keys = model.state_dict().keys()
    assert any(k.startswith('student.') for k in keys)
    assert any(k.startswith('distill_losses.loss_kd_fpn.adapters') for k in keys)
    model.double()
    assert next(model.teacher.parameters()).dtype == torch.float64
    model.float()


def test_teacher_weights_loaded_exactly(teacher_ckpt):
    model = build(teacher_ckpt)
    saved = safe_torch_load(teacher_ckpt)['state_dict']
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(v, saved[k]), k


# ---- strict loading errors --------------------------------------------------------------------
def test_missing_teacher_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match='checkpoints/README.md'):
        build(str(tmp_path / 'missing.pth'))


def test_wrong_architecture_checkpoint_names_keys(tmp_path):
    cfg = load_model_cfg(STUDENT_CFG)
    cfg.neck.num_outs = 4
    path = str(tmp_path / 'other.pth')
    torch.save({'state_dict': MODELS.build(cfg).state_dict()}, path)
    with pytest.raises(CheckpointMismatchError) as err:
        build(path)
    msg = str(err.value)
    assert path in msg and 'shape mismatch' in msg and 'backbone.' in msg


def test_wrong_num_classes_checkpoint_says_num_classes(tmp_path):
    cfg = load_model_cfg(TEACHER_CFG)
    cfg.roi_head.bbox_head.num_classes = 5
    path = str(tmp_path / 'five.pth')
    torch.save({'state_dict': MODELS.build(cfg).state_dict()}, path)
    with pytest.raises(CheckpointMismatchError, match='num_classes') as err:
        build(path)
    assert 'roi_head.bbox_head.fc_cls.weight' in str(err.value)


def test_unexpected_keys_reported(tmp_path, teacher_ckpt):
    state = safe_torch_load(teacher_ckpt)
    state['state_dict']['extra.weight'] = torch.zeros(1)
    path = str(tmp_path / 'extra.pth')
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError, match=r'unexpected in the checkpoint \(1\): '
                       r'extra.weight'):
        build(path)


def test_teacher_student_class_mismatch_is_an_error():
    teacher = load_model_cfg(TEACHER_CFG)
    teacher.roi_head.bbox_head.num_classes = 5
    with pytest.raises(ValueError, match='teacher has 5 classes and student 8'):
        build(None, teacher=teacher)


def test_channel_mismatch_without_adapter():
    with pytest.raises(ValueError, match="adapter='conv1x1'"):
        build(None, losses=dict(loss_kd_fpn=dict(type='FeatureImitationLoss')))


def test_loss_names_validated_and_list_form():
    with pytest.raises(ValueError, match="must start with 'loss_'"):
        build(None, losses=dict(fpn=FPN))
    model = build(None, losses=[FPN, KL])
    assert list(model.distill_losses) == ['loss_feature_imitation', 'loss_roi_cls_kl']


# ---- the loss step ----------------------------------------------------------------------------
def test_loss_step_with_empty_image(teacher_ckpt):
    model = build(teacher_ckpt)
    inputs, samples = batch(model)
    with MethodRecorder(model.teacher, 'loss') as t_loss:
        losses = model(inputs, samples, mode='loss')
    assert not t_loss.calls, 'the teacher must never compute its detection loss'
    for key in ('loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_kd_fpn', 'loss_kd_kl'):
        assert key in losses
    assert losses['loss_kd_fpn'].item() > 0 and losses['loss_kd_kl'].item() > 0
    total = sum(v.sum() for k, v in losses.items() if 'loss' in k and torch.is_tensor(v))
    total.backward()
    assert model.distill_losses.loss_kd_fpn.adapters[0].weight.grad is not None
    assert all(p.grad is None for p in model.teacher.parameters())


def test_degenerate_boxes_do_not_break_the_step(teacher_ckpt):
    model = build(teacher_ckpt)
    inputs, samples = batch(model, num_items=(3, 2))
    samples[1].gt_instances.bboxes[0] = torch.tensor([10.0, 10.0, 10.0, 30.0])  # zero width
    samples[0].gt_instances.bboxes[1] = torch.tensor([5.0, float('nan'), 20.0, 30.0])
    # plain mmdet turns a zero-width GT into a NaN box loss; the distiller must not
    assert not torch.isfinite(model.student.loss(inputs, copy.deepcopy(samples))['loss_bbox'])
    losses = model(inputs, samples, mode='loss')
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in losses.values()
               if not isinstance(v, list))
    assert len(samples[1].gt_instances) == 1 and len(samples[0].gt_instances) == 2
    assert model._num_dropped_gt == 2


def test_roi_kl_equals_teacher_on_student_positive_rois(teacher_ckpt):
    model = build(teacher_ckpt, losses=dict(loss_kd_kl=dict(KL, loss_weight=0.5)))
    inputs, samples = batch(model, num_items=(4, 2))
    torch.manual_seed(1)
    got = model(inputs, samples, mode='loss')['loss_kd_kl']
    _, rois, idx, out = student_roi_step(model, inputs, samples, seed=1)
    t_feats = model.teacher.extract_feat(inputs)
    t_logits = model.teacher.roi_head._bbox_forward(t_feats, rois[idx])['cls_score']
    want = 0.5 * soft_label_kl(out['cls_score'][idx], t_logits, 2.0)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_teacher_runs_only_as_far_as_needed(teacher_ckpt):
    model = build(teacher_ckpt, losses=dict(loss_kd_fpn=FPN))
    inputs, samples = batch(model)
    with MethodRecorder(model.teacher.roi_head, '_bbox_forward') as roi, \
            MethodRecorder(model.teacher, 'extract_feat') as feat:
        model(inputs, samples, mode='loss')
    assert len(feat.calls) == 1 and not roi.calls


def test_stopped_loss_skips_teacher_and_is_zero(teacher_ckpt):
    model = build(teacher_ckpt, losses=dict(
        loss_kd_fpn=dict(FPN, weight_schedule=dict(stop_iter=0))))
    inputs, samples = batch(model)
    with MethodRecorder(model.teacher, 'extract_feat') as feat:
        losses = model(inputs, samples, mode='loss')
    assert losses['loss_kd_fpn'].item() == 0.0 and not feat.calls


def test_predict_and_tensor_modes_are_the_students(teacher_ckpt):
    model = build(teacher_ckpt).eval()
    inputs, samples = batch(model, num_items=(1, 1))
    with torch.no_grad():
        a = model(inputs, copy.deepcopy(samples), mode='predict')
        b = model.student.predict(inputs, copy.deepcopy(samples))
        ta = model(inputs, samples, mode='tensor')
        tb = model.student._forward(inputs, samples)
    for x, y in zip(a, b):
        assert torch.equal(x.pred_instances.bboxes, y.pred_instances.bboxes)
    assert all(torch.equal(x, y) for x, y in zip(ta[0], tb[0]))


# ---- teacher input normalisation --------------------------------------------------------------
def test_teacher_input_adapter_converts_pytorch_to_caffe_style():
    pytorch = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True,
                   pad_size_divisor=32)
    caffe = dict(mean=[103.53, 116.28, 123.675], std=[1.0, 1.0, 1.0], bgr_to_rgb=False,
                 pad_size_divisor=64)
    torch.manual_seed(0)
    bgr = torch.rand(1, 3, 40, 50) * 255  # raw image as loaded (BGR)
    s_mean = torch.tensor(pytorch['mean']).view(1, 3, 1, 1)
    s_std = torch.tensor(pytorch['std']).view(1, 3, 1, 1)
    student_in = torch.zeros(1, 3, 64, 64)  # padded to 32 with 0
    student_in[..., :40, :50] = (bgr.flip(1) - s_mean) / s_std
    adapter = TeacherInputAdapter(pytorch, caffe)
    assert not adapter.identity and 'differ' in adapter.describe()
    out = adapter(student_in, [(40, 50)])
    assert out.shape == (1, 3, 64, 64)
    want = bgr - torch.tensor(caffe['mean']).view(1, 3, 1, 1)
    torch.testing.assert_close(out[..., :40, :50], want, rtol=1e-5, atol=1e-3)
    assert out[..., 40:, :].abs().max() == 0 and out[..., :, 50:].abs().max() == 0
    out2 = TeacherInputAdapter(pytorch, dict(caffe, pad_size_divisor=128))(student_in, [(40, 50)])
    assert out2.shape == (1, 3, 128, 128)
    assert TeacherInputAdapter(pytorch, dict(pytorch)).identity


def test_distiller_uses_teacher_normalisation(teacher_ckpt):
    teacher = load_model_cfg(TEACHER_CFG)
    teacher.data_preprocessor.update(mean=[0.0, 0.0, 0.0], std=[255.0, 255.0, 255.0])
    model = build(teacher_ckpt, teacher=teacher)
    assert not model.teacher_inputs.identity
    inputs, samples = batch(model)
    with MethodRecorder(model.teacher, 'extract_feat') as rec:
        model(inputs, samples, mode='loss')
    seen = rec.calls[0][0][0]
    assert not torch.equal(seen, inputs)
    h, w = samples[0].img_shape
    assert -1e-5 <= seen[0, :, :h, :w].min() and seen[0, :, :h, :w].max() <= 1.0 + 1e-5
