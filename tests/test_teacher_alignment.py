"""A teacher that pads further than the student (larger ``pad_size_divisor``): its input is
converted, and its feature maps are cut back to the student's grid, so every loss compares the
same pixels level by level."""
import pytest
import torch
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs

from conftest import STUDENT_CFG, TEACHER_CFG
from mmkd.models.utils import TeacherInputAdapter
from mmkd.utils import load_model_cfg


def test_crop_features_hand_sizes():
    # student batch 96 x 80, teacher padded to 128 x 128 (pad_size_divisor=64 vs 32)
    strides = (4, 8, 16, 32, 64)
    teacher = [torch.arange(2 * (128 // s) * (128 // s), dtype=torch.float).view(
        1, 2, 128 // s, 128 // s) for s in strides]
    out = TeacherInputAdapter.crop_features(teacher, (96, 80), (128, 128))
    assert [tuple(o.shape[-2:]) for o in out] == [(24, 20), (12, 10), (6, 5), (3, 3), (2, 2)]
    for o, t in zip(out, teacher):  # the top-left block: the pixels the student sees
        assert torch.equal(o, t[..., :o.shape[-2], :o.shape[-1]])
    # a map on another grid (e.g. a teacher neck with another stride) is left for the losses'
    # size check to report
    odd = torch.zeros(1, 2, 7, 7)
    assert TeacherInputAdapter.crop_features([odd], (96, 80), (128, 128))[0] is odd


@pytest.mark.parametrize('losses', [
    dict(loss_kd_fpn=dict(type='FeatureImitationLoss', adapter='conv1x1', fg_mask='gt')),
    dict(loss_pkd=dict(type='PKDLoss', adapter='conv1x1'),
         loss_kd_kl=dict(type='RoIClsKLLoss', temperature=2.0)),
])
def test_teacher_with_larger_pad_divisor_trains(losses, teacher_ckpt):
    teacher = load_model_cfg(TEACHER_CFG)
    teacher.data_preprocessor.pad_size_divisor = 64  # the student pads to 32
    model = MODELS.build(dict(type='DistillDetector', student=STUDENT_CFG, teacher=teacher,
                              teacher_ckpt=teacher_ckpt, distill_losses=losses))
    torch.manual_seed(0)
    packed = demo_mm_inputs(2, [[3, 96, 80], [3, 64, 64]], num_items=[3, 2], num_classes=8,
                            use_box_type=False)
    data = model.data_preprocessor(packed, True)
    inputs, samples = data['inputs'], data['data_samples']
    assert tuple(inputs.shape[-2:]) == (96, 96)
    assert tuple(model._teacher_batch(inputs, samples).shape[-2:]) == (128, 128)
    s_feats = model.student.extract_feat(inputs)
    t_feats = model.teacher_features(inputs, samples)
    assert [f.shape[-2:] for f in t_feats] == [f.shape[-2:] for f in s_feats]
    out = model(inputs, samples, mode='loss')
    for name in losses:
        value = sum(v for k, v in out.items() if k.startswith(name))
        assert torch.isfinite(value) and value > 0, (name, value)
