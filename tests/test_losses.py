"""Loss values on small hand-made tensors, checked against hand computations."""
import math

import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

from mmkd.models import DistillContext, FeatureImitationLoss, soft_label_kl
from mmkd.models.losses import masked_sq_error
from mmkd.models.utils import paint_batch_masks, paint_box_mask


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_soft_label_kl_matches_hand_computation():
    s = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    t = torch.tensor([[3.0, 2.0, 1.0], [1.0, 0.0, -1.0]])
    T = 2.0
    ps, pt = _softmax(s.numpy() / T), _softmax(t.numpy() / T)
    rows = (pt * (np.log(pt) - np.log(ps))).sum(-1) * T * T
    assert soft_label_kl(s, t, T, 'batchmean').item() == pytest.approx(rows.mean(), rel=1e-5)
    assert soft_label_kl(s, t, T, 'sum').item() == pytest.approx(rows.sum(), rel=1e-5)
    assert soft_label_kl(s, t, T, 'classmean').item() == pytest.approx(rows.mean() / 3, rel=1e-5)
    w = torch.tensor([0.5, 2.0])
    assert soft_label_kl(s, t, T, 'batchmean', weight=w).item() == pytest.approx(
        (rows * w.numpy()).mean(), rel=1e-5)
    np.testing.assert_allclose(soft_label_kl(s, t, T, 'none').numpy(), rows, rtol=1e-5)


def test_soft_label_kl_zero_for_equal_logits_and_grad_only_to_student():
    s = torch.randn(4, 5, requires_grad=True)
    t = s.detach().clone().requires_grad_(True)
    loss = soft_label_kl(s, t, 3.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    soft_label_kl(s + 1.0 * torch.arange(5.0), t, 3.0).backward()
    assert t.grad is None and s.grad is not None


def test_soft_label_kl_rejects_class_mismatch():
    with pytest.raises(ValueError, match='same number of classes'):
        soft_label_kl(torch.zeros(2, 3), torch.zeros(2, 4))


def test_masked_sq_error_hand_values():
    diff = torch.zeros(1, 2, 2, 2)
    diff[0, :, 0, 0] = torch.tensor([1.0, 3.0])  # squared: 1 + 9 = 10 at pixel (0, 0)
    diff[0, :, 1, 1] = torch.tensor([2.0, 0.0])  # squared: 4 at pixel (1, 1)
    assert masked_sq_error(diff).item() == pytest.approx(14 / 8)
    mask = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert masked_sq_error(diff, mask).item() == pytest.approx(10 / (2 * 1))
    assert masked_sq_error(diff, 1 - mask).item() == pytest.approx(4 / (2 * 3))
    assert masked_sq_error(diff, torch.zeros(1, 2, 2)).item() == 0.0  # empty mask: no NaN


def test_paint_box_mask_cells():
    # stride 4 on an 4x4 grid (16 px input). Box x 5..11, y 0..3 covers cols 1..2, row 0.
    m = paint_box_mask(torch.tensor([[5.0, 0.0, 11.0, 3.0]]), (4, 4), (4, 4))
    expected = torch.zeros(4, 4)
    expected[0, 1:3] = 1
    assert torch.equal(m, expected)
    # degenerate box (zero size) still marks the one cell containing it
    m = paint_box_mask(torch.tensor([[9.0, 9.0, 9.0, 9.0]]), (4, 4), (4, 4))
    assert m.sum() == 1 and m[2, 2] == 1
    # values: overlap takes the larger; negative values are kept
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [4.0, 4.0, 12.0, 12.0]])
    m = paint_box_mask(boxes, (4, 4), (4, 4), values=torch.tensor([-0.5, 0.25]))
    assert m[0, 0] == -0.5 and m[1, 1] == 0.25 and m[2, 2] == 0.25 and m[3, 3] == 0
    # no boxes
    assert paint_box_mask(torch.zeros(0, 4), (3, 5), (2, 2)).sum() == 0


def _sample(boxes, hw=(8, 8)):
    ds = DetDataSample(metainfo=dict(img_shape=hw, batch_input_shape=hw))
    ds.gt_instances = InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
                                   labels=torch.zeros(len(boxes), dtype=torch.long))
    return ds


def test_feature_imitation_loss_hand_values():
    # one level, 2 channels, 4x4 map, 8x8 input -> stride 2
    s = torch.zeros(1, 2, 4, 4)
    t = torch.zeros(1, 2, 4, 4)
    t[0, 0, 0, 0] = 2.0  # inside the GT box (cells rows 0..1, cols 0..1)
    t[0, 1, 3, 3] = 1.0  # background
    ctx = DistillContext(None, None, [_sample([[0, 0, 4, 4]])], (s, ), (t, ))
    plain = FeatureImitationLoss(student_channels=2, teacher_channels=2)
    assert plain(ctx).item() == pytest.approx((4 + 1) / 32)
    masked = FeatureImitationLoss(student_channels=2, teacher_channels=2, fg_mask='gt',
                                  fg_weight=1.0, bg_weight=4.0)
    fg = 4 / (2 * 4)  # 4 fg cells
    bg = 1 / (2 * 12)  # 12 bg cells
    assert masked(ctx).item() == pytest.approx(fg + 4 * bg)
    # an image with no boxes: everything is background, no NaN
    ctx_empty = DistillContext(None, None, [_sample([])], (s, ), (t, ))
    assert masked(ctx_empty).item() == pytest.approx(1.0 * 0 + 4 * (5 / 32))


def test_feature_imitation_levels_mean_and_sum():
    s = (torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 1, 1))
    t = (torch.ones(1, 1, 2, 2), 3 * torch.ones(1, 1, 1, 1))
    ctx = DistillContext(None, None, [_sample([], (4, 4))], s, t)
    mean = FeatureImitationLoss(student_channels=1, teacher_channels=1)
    total = FeatureImitationLoss(student_channels=1, teacher_channels=1, level_reduction='sum')
    assert mean(ctx).item() == pytest.approx((1 + 9) / 2)
    assert total(ctx).item() == pytest.approx(10)
    only1 = FeatureImitationLoss(student_channels=1, teacher_channels=1, levels=[1])
    assert only1(ctx).item() == pytest.approx(9)


def test_paint_batch_masks_uses_batch_input_stride():
    feat = torch.zeros(2, 1, 4, 8)  # 16x32 input -> stride 4
    masks = paint_batch_masks([torch.tensor([[0.0, 0.0, 4.0, 4.0]]), torch.zeros(0, 4)],
                              feat, (16, 32))
    assert masks.shape == (2, 4, 8) and masks[0].sum() == 1 and masks[1].sum() == 0


def test_feature_adapter_channels_checked():
    class Neck(torch.nn.Module):
        def __init__(self, c):
            super().__init__()
            self.out_channels, self.num_outs = c, 3

    class Det(torch.nn.Module):
        def __init__(self, c):
            super().__init__()
            self.neck = Neck(c)

    with pytest.raises(ValueError, match="adapter='conv1x1'"):
        FeatureImitationLoss().setup(Det(8), Det(16))
    loss = FeatureImitationLoss(adapter='conv3x3')
    loss.setup(Det(8), Det(16))
    assert len(loss.adapters) == 3 and loss.adapters[0].weight.shape == (16, 8, 3, 3)
    assert math.isclose(loss.loss_weight, 1.0)
