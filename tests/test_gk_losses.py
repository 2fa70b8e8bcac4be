"""Global Knowledge RDM: levels, masks, every loss term against hand computations."""
import pytest
import torch
import torch.nn.functional as F
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData
from torch import nn

from mmkd.models import DistillContext, soft_label_kl
from mmkd.models.methods.global_knowledge import (RobustDistillingModule, gk_levels,
                                                  gk_masked_error)
from mmkd.models.utils import TrainProgress


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


def test_negative_robustness_counts_as_background():
    loss = _gt_loss(fg_weight=1.0, bg_weight=1.0)
    s = torch.zeros(1, 2, 4, 4)
    s[0, 0] = 1.0
    t = torch.zeros(1, 2, 4, 4)
    t[0, 0] = -1.0  # teacher descriptor (-1, 0)
    pgm = loss.pgm
    pgm.proto_s[0, 1, 0] = torch.tensor([1.0, 0.0])  # cos_s = 1
    pgm.proto_t[0, 1, 0] = torch.tensor([1.0, 0.0])  # cos_t = -1 -> r = 1 - 2 = -1
    pgm.proto_valid[0, 1, 0] = True
    pgm.num_generated += 1
    ctx = DistillContext(None, None, [_sample([[0, 0, 4, 4]], [1])], (s, ), (t, ),
                         progress=TrainProgress(max_epochs=12))
    out = loss(ctx)
    assert out['fg'].item() == 0.0  # nothing painted positive
    assert out['bg'].item() == pytest.approx(16 * 4 / (2 * 2 * 16))  # D^2 = 4 on channel 0


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


def test_soft_label_weighted_by_roi_robustness_matches_formula():
    s_logits = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    t_logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    r = torch.tensor([1.0, 0.25])
    got = soft_label_kl(s_logits, t_logits, 2.0, 'classmean', weight=r)
    ps, pt = F.softmax(s_logits / 2, -1), F.softmax(t_logits / 2, -1)
    rows = (pt * (pt.log() - ps.log())).sum(-1) * 4
    assert got.item() == pytest.approx(((rows * r).sum() / (2 * 3)).item(), rel=1e-5)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match='unknown pgm settings'):
        RobustDistillingModule(pgm=dict(modes='online'))
    with pytest.raises(ValueError, match="'offline' or 'online'"):
        RobustDistillingModule(pgm=dict(mode='cached'))
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
