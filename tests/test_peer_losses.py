"""PKD, CWD, FGD and MGD on tiny hand-made tensors, checked against hand computations."""
import numpy as np
import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

from mmkd.models import ChannelWiseDistillLoss, DistillContext, FGDLoss, MGDLoss, PKDLoss
from mmkd.models.losses.fgd import fgd_attention, fgd_masks, fgd_masks_released
from mmkd.models.losses.mgd import random_keep_mask


class _Neck(torch.nn.Module):
    def __init__(self, c, n):
        super().__init__()
        self.out_channels, self.num_outs = c, n


class _Det(torch.nn.Module):
    """Just enough of a detector for ``setup``: a neck with out_channels and num_outs."""

    def __init__(self, c, n=1):
        super().__init__()
        self.neck = _Neck(c, n)


def _sample(boxes, hw=(4, 4)):
    ds = DetDataSample(metainfo=dict(img_shape=hw, batch_input_shape=hw))
    ds.gt_instances = InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
                                   labels=torch.zeros(len(boxes), dtype=torch.long))
    return ds


def _ctx(s, t, boxes=(), hw=(4, 4)):
    s = s if isinstance(s, tuple) else (s, )
    t = t if isinstance(t, tuple) else (t, )
    return DistillContext(None, None, [_sample(list(boxes), hw)] * s[0].shape[0], s, t)


# 1x2x2x2 maps used by the hand computations
S = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.5, -1.0], [2.0, 0.0]]]])
T = torch.tensor([[[[2.0, 1.0], [4.0, 3.0]], [[1.0, 1.0], [-1.0, 0.5]]]])


def _std_np(x, eps=1e-6):
    x = x.transpose(1, 0, 2, 3).reshape(x.shape[1], -1)
    z = (x - x.mean(1, keepdims=True)) / (x.std(1, ddof=1, keepdims=True) + eps)
    return z


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ---- PKD -------------------------------------------------------------------------------------
def test_pkd_hand_value_and_level_sum():
    s, t = S.numpy(), T.numpy()
    one = ((_std_np(s) - _std_np(t)) ** 2).mean() / 2
    loss = PKDLoss()
    assert loss(_ctx(S, T)).item() == pytest.approx(one, rel=1e-5)
    # 1 - Pearson r per channel, averaged: the same number (up to the (n-1)/n of the std)
    r = np.array([np.corrcoef(s[0, c].ravel(), t[0, c].ravel())[0, 1] for c in range(2)])
    assert one == pytest.approx((1 - r).mean() * 3 / 4, rel=1e-4)
    s2, t2 = torch.randn(2, 2, 3, 3), torch.randn(2, 2, 3, 3)
    two = loss(_ctx((S, s2), (T, t2))).item()
    assert two == pytest.approx(one + loss(_ctx(s2, t2)).item(), rel=1e-5)
    assert PKDLoss(levels=[1])(_ctx((S, s2), (T, t2))).item() == pytest.approx(
        loss(_ctx(s2, t2)).item(), rel=1e-6)


def test_pkd_invariant_to_per_channel_affine_teacher():
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    scale = torch.tensor([0.1, 3.0, 250.0]).view(1, 3, 1, 1)
    shift = torch.tensor([-5.0, 0.0, 40.0]).view(1, 3, 1, 1)
    base = PKDLoss()(_ctx(s, t)).item()
    assert PKDLoss()(_ctx(s, t * scale + shift)).item() == pytest.approx(base, rel=1e-4)
    assert PKDLoss()(_ctx(s, s * scale + shift)).item() == pytest.approx(0.0, abs=1e-6)
    # a single value per channel (1x1 map, batch 1) gives zeros, not NaN
    assert PKDLoss()(_ctx(torch.ones(1, 3, 1, 1), torch.zeros(1, 3, 1, 1))).item() == 0.0


def test_pkd_resizes_the_student_map_on_request():
    torch.manual_seed(2)
    s, t = torch.randn(2, 3, 3, 4), torch.randn(2, 3, 6, 8)
    with pytest.raises(ValueError, match='differ in size'):
        PKDLoss()(_ctx(s, t))
    up = torch.nn.functional.interpolate(s, size=(6, 8), mode='bilinear', align_corners=False)
    want = PKDLoss()(_ctx(up, t)).item()
    assert PKDLoss(resize_student=True)(_ctx(s, t)).item() == pytest.approx(want, rel=1e-6)
    # same sizes: no effect
    assert PKDLoss(resize_student=True)(_ctx(up, t)).item() == pytest.approx(want, rel=1e-6)


def test_pkd_channel_mismatch_needs_adapter():
    with pytest.raises(ValueError, match="adapter='conv1x1'"):
        PKDLoss().setup(_Det(2), _Det(3))
    loss = PKDLoss(adapter='conv1x1', levels=[0, 2])
    loss.setup(_Det(2, 5), _Det(3, 5))
    assert len(loss.adapters) == 2 and loss.adapters[0].weight.shape == (3, 2, 1, 1)
    with pytest.raises(ValueError, match='levels'):
        PKDLoss(levels=[0, 0]).setup(_Det(2), _Det(2))


# ---- CWD -------------------------------------------------------------------------------------
def test_cwd_hand_value():
    tau = 2.0
    ps = _softmax(S.numpy().reshape(2, 4) / tau)
    pt = _softmax(T.numpy().reshape(2, 4) / tau)
    kl = (pt * (np.log(pt) - np.log(ps))).sum()
    expected = kl * tau ** 2 / (1 * 2)
    assert ChannelWiseDistillLoss(tau=tau)(_ctx(S, T)).item() == pytest.approx(expected, rel=1e-5)


def test_cwd_zero_for_equal_maps_and_shift_invariant():
    torch.manual_seed(1)
    s = torch.randn(2, 3, 4, 5)
    loss = ChannelWiseDistillLoss(tau=4.0)
    assert loss(_ctx(s, s.clone())).item() == pytest.approx(0.0, abs=1e-6)
    t = torch.randn(2, 3, 4, 5)
    shift = torch.randn(2, 3, 1, 1) * 10
    assert loss(_ctx(s + shift, t)).item() == pytest.approx(loss(_ctx(s, t)).item(), rel=1e-4)
    assert loss(_ctx(s, t)).item() > 0
    with pytest.raises(ValueError, match="adapter='conv1x1'"):
        ChannelWiseDistillLoss().setup(_Det(2), _Det(4))


# ---- FGD -------------------------------------------------------------------------------------
def test_fgd_masks_from_hand_boxes():
    feat = torch.zeros(2, 1, 4, 4)  # 8x8 input -> stride 2
    big = [0.0, 0.0, 4.0, 6.0]  # cols 0..1, rows 0..2: 6 cells -> 1/6
    small = [2.0, 2.0, 4.0, 4.0]  # cell (1, 1) only -> 1, wins the overlap
    fg, bg = fgd_masks([torch.tensor([big, small]), torch.zeros(0, 4)], feat, (8, 8))
    expected = torch.zeros(4, 4)
    expected[0:3, 0:2] = 1 / 6
    expected[1, 1] = 1.0
    assert torch.allclose(fg[0], expected)
    exp_bg = torch.full((4, 4), 1 / 10)
    exp_bg[0:3, 0:2] = 0
    assert torch.allclose(bg[0], exp_bg)
    assert fg[1].sum() == 0 and torch.allclose(bg[1], torch.full((4, 4), 1 / 16))


def test_fgd_released_masks_from_hand_boxes():
    """The released rule: boxes scaled by img_shape, inclusive floor..ceil cells, value
    1 / ((dh + 1)(dw + 1)), the larger value wins, background normalised by its sum."""
    feat = torch.zeros(2, 1, 4, 4)
    big = [0.0, 0.0, 4.0, 6.0]  # img 8x8 on a 4x4 map: x 0..2, y 0..3 -> 3 x 4 cells -> 1/12
    small = [2.0, 2.0, 4.0, 4.0]  # x 1..2, y 1..2 -> 4 cells -> 1/4, wins the overlap
    fg, bg = fgd_masks_released([torch.tensor([big, small]), torch.zeros(0, 4)], feat,
                                [(8, 8), (8, 8)])
    expected = torch.zeros(4, 4)
    expected[0:4, 0:3] = 1 / 12
    expected[1:3, 1:3] = 1 / 4
    assert torch.allclose(fg[0], expected)
    exp_bg = torch.zeros(4, 4)
    exp_bg[:, 3] = 1 / 4  # the 4 uncovered cells
    assert torch.allclose(bg[0], exp_bg)
    assert fg[1].sum() == 0 and torch.allclose(bg[1], torch.full((4, 4), 1 / 16))
    # scaled by the valid image, not the padded batch: a 4 x 8 image (h x w) padded to 8 x 8
    # spreads over the whole 4 x 4 map; box 0..4 x 0..2 -> x 0..2, y 0..2 -> 9 cells -> 1/9
    fg, bg = fgd_masks_released([torch.tensor([[0.0, 0.0, 4.0, 2.0]])], feat[:1], [(4, 8)])
    expected = torch.zeros(4, 4)
    expected[0:3, 0:3] = 1 / 9
    assert torch.allclose(fg[0], expected)
    # a box covering the whole map leaves a zero background (nothing to normalise)
    fg, bg = fgd_masks_released([torch.tensor([[0.0, 0.0, 8.0, 8.0]])], feat[:1], [(8, 8)])
    assert torch.allclose(fg[0], torch.full((4, 4), 1 / 25)) and bg.sum() == 0
    with pytest.raises(ValueError, match='mask_rule'):
        FGDLoss(mask_rule='exact')
    assert FGDLoss().mask_rule == 'released'


def test_fgd_attention_hand_values():
    sp, ch = fgd_attention(T, 0.5)
    a = np.abs(T.numpy())[0]
    exp_sp = 4 * _softmax(a.mean(0).ravel() / 0.5).reshape(2, 2)
    exp_ch = 2 * _softmax(a.mean((1, 2)) / 0.5)
    np.testing.assert_allclose(sp[0].numpy(), exp_sp, rtol=1e-5)
    np.testing.assert_allclose(ch[0].numpy(), exp_ch, rtol=1e-5)
    assert sp.sum().item() == pytest.approx(4) and ch.sum().item() == pytest.approx(2)


@pytest.mark.parametrize('rule', ['cover', 'released'])
def test_fgd_hand_value(rule):
    # 4x4 input, 2x2 map (stride 2); the box covers cell (0, 0): fg 1 there, bg 1/3 elsewhere
    # (cover rule). The released rule paints cells 0..1 inclusive, i.e. the whole map at
    # 1 / (2 * 2), and leaves a zero background.
    loss = FGDLoss(temperature=0.5, alpha_fg=2.0, beta_bg=3.0, gamma_attn=5.0,
                   lambda_global=7.0, mask_rule=rule)
    loss.setup(_Det(2), _Det(2))
    out = loss(_ctx(S, T, boxes=[[0.0, 0.0, 2.0, 2.0]]))
    s, t = S.numpy()[0], T.numpy()[0]

    def att(x):
        a = np.abs(x)
        return 4 * _softmax(a.mean(0).ravel() / 0.5).reshape(2, 2), 2 * _softmax(
            a.mean((1, 2)) / 0.5)

    sp_t, ch_t = att(t)
    sp_s, ch_s = att(s)
    w = (s - t) ** 2 * sp_t[None] * ch_t[:, None, None]
    if rule == 'cover':
        fg = np.array([[1.0, 0.0], [0.0, 0.0]])
        bg = (1 - fg) / 3
    else:
        fg, bg = np.full((2, 2), 0.25), np.zeros((2, 2))
    assert out['fg'].item() == pytest.approx(2.0 * (w * fg).sum(), rel=1e-5)
    assert out['bg'].item() == pytest.approx(3.0 * (w * bg).sum(), rel=1e-5)
    attn = np.abs(ch_s - ch_t).sum() + np.abs(sp_s - sp_t).sum()
    assert out['attn'].item() == pytest.approx(5.0 * attn, rel=1e-5)
    # the GC blocks start as the identity (last conv zero): global = sum((S - T)^2) / B
    assert out['global'].item() == pytest.approx(7.0 * ((s - t) ** 2).sum(), rel=1e-5)


def test_fgd_levels_need_setup_and_default_weights():
    with pytest.raises(RuntimeError, match='setup'):
        FGDLoss()(_ctx(S, T))
    loss = MODELS.build(dict(type='FGDLoss'))
    assert (loss.alpha_fg, loss.beta_bg, loss.gamma_attn, loss.lambda_global) == (
        1e-3, 5e-4, 5e-4, 5e-6)


# ---- MGD -------------------------------------------------------------------------------------
def test_mgd_ratio_zero_is_generation_mse():
    torch.manual_seed(0)
    loss = MGDLoss(mask_ratio=0.0)
    loss.setup(_Det(2), _Det(3))
    s, t = torch.randn(2, 2, 3, 3), torch.randn(2, 3, 3, 3)
    with torch.no_grad():
        gen = loss.generation[0](loss.align[0](s))
        expected = ((gen - t) ** 2).sum().item() / 2
    assert loss(_ctx(s, t)).item() == pytest.approx(expected, rel=1e-5)


def test_mgd_mask_ratio_and_seeded_masks():
    feat = torch.zeros(4, 8, 50, 50)
    torch.manual_seed(3)
    m1 = random_keep_mask(feat, 0.65)
    torch.manual_seed(3)
    m2 = random_keep_mask(feat, 0.65)
    assert m1.shape == (4, 1, 50, 50) and torch.equal(m1, m2)
    assert 1 - m1.mean().item() == pytest.approx(0.65, abs=0.02)
    loss = MGDLoss(mask_ratio=0.5)
    loss.setup(_Det(2), _Det(2))
    s, t = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4)
    torch.manual_seed(7)
    a = loss(_ctx(s, t)).item()
    torch.manual_seed(7)
    assert loss(_ctx(s, t)).item() == a
    with pytest.raises(ValueError, match='mask_ratio'):
        MGDLoss(mask_ratio=1.0)


def test_mgd_draw_is_the_released_rule():
    # the release zeroes the positions where u > 1 - mask_ratio, u = torch.rand(B, 1, H, W)
    feat = torch.zeros(2, 3, 5, 7)
    torch.manual_seed(11)
    u = torch.rand(2, 1, 5, 7)
    torch.manual_seed(11)
    assert torch.equal(random_keep_mask(feat, 0.65), (u <= 0.35).float())


def test_mgd_masks_the_aligned_student_map_with_its_own_draw():
    """The drawn mask is applied: with the RNG seeded, the loss equals the formula written out
    with the release's draw (u = rand(B, 1, H, W) per level in order, keep where
    u <= 1 - ratio) multiplied into the aligned student map, and differs from no mask."""
    torch.manual_seed(0)
    loss = MGDLoss(mask_ratio=0.5, levels=[0, 1])
    loss.setup(_Det(2, 2), _Det(3, 2))
    s = (torch.randn(2, 2, 4, 4), torch.randn(2, 2, 2, 3))
    t = (torch.randn(2, 3, 4, 4), torch.randn(2, 3, 2, 3))
    torch.manual_seed(5)
    got = loss(_ctx(s, t)).item()
    torch.manual_seed(5)
    want = unmasked = 0.0
    with torch.no_grad():
        for j in range(2):
            b, _, h, w = s[j].shape
            keep = (torch.rand(b, 1, h, w) <= 0.5).float()
            assert 0 < keep.sum() < keep.numel()
            a = loss.align[j](s[j])
            want += ((loss.generation[j](a * keep) - t[j]) ** 2).sum().item() / b
            unmasked += ((loss.generation[j](a) - t[j]) ** 2).sum().item() / b
    assert got == pytest.approx(want, rel=1e-5)
    assert abs(got - unmasked) > 1e-3 * unmasked


def test_mgd_given_keep_masks():
    torch.manual_seed(0)
    loss = MGDLoss(mask_ratio=0.5, levels=[0, 1])
    loss.setup(_Det(2, 2), _Det(2, 2))
    s = (torch.randn(1, 2, 4, 4), torch.randn(1, 2, 2, 2))
    t = (torch.randn(1, 2, 4, 4), torch.randn(1, 2, 2, 2))
    ones = [torch.ones(1, 1, 4, 4), torch.ones(1, 1, 2, 2)]
    with torch.no_grad():
        want = sum(((loss.generation[j](s[j]) - t[j]) ** 2).sum().item() for j in range(2))
    assert loss(_ctx(s, t), keep_masks=ones).item() == pytest.approx(want, rel=1e-5)
    zeros = [torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 2, 2)]
    with torch.no_grad():  # everything masked: the generator sees zeros
        want = sum(((loss.generation[j](torch.zeros_like(s[j])) - t[j]) ** 2).sum().item()
                   for j in range(2))
    assert loss(_ctx(s, t), keep_masks=zeros).item() == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match='one per level'):
        loss(_ctx(s, t), keep_masks=ones[:1])
    with pytest.raises(ValueError, match='shape'):
        loss(_ctx(s, t), keep_masks=[ones[1], ones[0]])


# ---- gradients -------------------------------------------------------------------------------
@pytest.mark.parametrize('cfg', [
    dict(type='PKDLoss', adapter='conv1x1'),
    dict(type='ChannelWiseDistillLoss', adapter='conv1x1', tau=2.0),
    dict(type='FGDLoss', alpha_fg=1.0, beta_bg=1.0, gamma_attn=1.0, lambda_global=1.0),
    dict(type='MGDLoss', mask_ratio=0.5),
], ids=lambda c: c['type'])
def test_gradients_reach_student_and_adapters_never_teacher(cfg):
    torch.manual_seed(0)
    loss = MODELS.build(cfg)
    loss.setup(_Det(2, 2), _Det(3, 2))
    s = (torch.randn(2, 2, 4, 4, requires_grad=True), torch.randn(2, 2, 2, 2, requires_grad=True))
    t = (torch.randn(2, 3, 4, 4, requires_grad=True), torch.randn(2, 3, 2, 2, requires_grad=True))
    out = loss(_ctx(s, t, boxes=[[0.0, 0.0, 2.0, 2.0]], hw=(8, 8)))
    total = sum(out.values()) if isinstance(out, dict) else out
    total.backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in s)
    assert all(x.grad is None for x in t)
    params = dict(loss.named_parameters())
    assert params, 'the loss should own its adapters'
    adapters = [n for n in params if n.startswith(('adapters.', 'align.'))]
    assert adapters and all(params[n].grad is not None for n in adapters)
    if cfg['type'] == 'FGDLoss':
        # student and teacher GC branches both train (their last conv starts at zero)
        for n in ('gc_student.0.transform.3.bias', 'gc_teacher.0.transform.3.bias'):
            assert params[n].grad.abs().sum() > 0
