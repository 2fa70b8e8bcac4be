"""Golden: PKD, CWD, FGD and MGD reproduce the released code's outputs and gradients.

Fixtures ``peers/*.pt`` (``CASES.md``, "Peer feature losses"): inputs plus the values and
gradients of MMRazor's PKD / CWD / MGD, pppppM's CWD and yzd-v's FGD / MGD. mmkd is built through
its public options in the released settings; the losses take a ``DistillContext`` whose data
samples carry ``img_shape``, ``batch_input_shape`` and the GT boxes.
"""
from typing import Dict, List, Sequence

import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData
from torch import Tensor, nn

from golden_utils import assert_same, assert_scalar, assert_tensor, assert_tensors, load_case
from mmkd.models import ChannelWiseDistillLoss, DistillContext, FGDLoss, MGDLoss, PKDLoss
from mmkd.models.losses.fgd import fgd_masks_released


class _Neck(nn.Module):
    def __init__(self, c: int, n: int) -> None:
        super().__init__()
        self.out_channels, self.num_outs = c, n


class _Det(nn.Module):
    """What the losses' ``setup`` reads of a detector: ``neck.out_channels`` / ``num_outs``."""

    def __init__(self, c: int, n: int) -> None:
        super().__init__()
        self.neck = _Neck(c, n)


def _samples(case: dict, batch: int) -> List[DetDataSample]:
    img = tuple(case.get('img_shape_hw', (64, 96)))
    pad = tuple(case.get('batch_input_hw', img))
    boxes = case.get('gt_boxes', [torch.zeros(0, 4)] * batch)
    out = []
    for b in boxes:
        ds = DetDataSample(metainfo=dict(img_shape=img, batch_input_shape=pad))
        ds.gt_instances = InstanceData(bboxes=b.clone(),
                                       labels=torch.zeros(len(b), dtype=torch.long))
        out.append(ds)
    return out


def _inputs(case: dict):
    s = [f.clone().requires_grad_(True) for f in case['student_feats']]
    t = [f.clone() for f in case['teacher_feats']]
    ctx = DistillContext(None, None, _samples(case, s[0].shape[0]), tuple(s), tuple(t))
    return s, ctx


def _grads(feats: Sequence[Tensor]) -> List[Tensor]:
    return [f.grad for f in feats]


def _assert_param_grads(module: nn.Module, ref: Dict[str, Tensor]) -> None:
    """Parameter gradients in mmkd names.

    All of them together, as one vector, within the tensor tolerance; and each tensor on its
    own where its gradient is above float32 round-off of the whole (>= 1e-3 of the largest
    one). Below that the stored values are round-off: FGD's ``context_conv.bias`` gradients
    are exactly 0 in exact arithmetic (the softmax over positions ignores a shift) and are
    stored as ~1e-16, and its finest level's GC gradients are ~1e-6 of the largest ones.
    """
    params = dict(module.named_parameters())
    assert set(params) == set(ref), sorted(set(params) ^ set(ref))
    names = sorted(ref)
    assert_tensor('grad_params (all, one vector)',
                  torch.cat([params[k].grad.flatten() for k in names]),
                  torch.cat([ref[k].flatten() for k in names]))
    scale = max(float(r.abs().max()) for r in ref.values())
    for k in names:
        if float(ref[k].abs().max()) >= 1e-3 * scale:
            assert_tensor(f'grad {k}', params[k].grad, ref[k])


# ---- PKD -------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', ['pkd_frcnn_w6', 'pkd_retina_w10'])
def test_pkd(name):
    case = load_case(f'peers/{name}.pt')
    s, ctx = _inputs(case)
    loss = PKDLoss(levels=list(range(len(s))), loss_weight=case['loss_weight'])
    loss.setup(_Det(s[0].shape[1], len(s)), _Det(s[0].shape[1], len(s)))
    value = loss.loss_weight * loss(ctx)
    assert_scalar('loss', value, case['loss'])
    value.backward()
    assert_tensors('grad_student_feats', _grads(s), case['grad_student_feats'])


# ---- CWD -------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', ['cwd_razor_tau1_w10', 'cwd_razor_tau4_w10'])
def test_cwd_mmrazor(name):
    case = load_case(f'peers/{name}.pt')
    s, ctx = _inputs(case)
    loss = ChannelWiseDistillLoss(tau=case['tau'], loss_weight=case['loss_weight'])
    loss.setup(_Det(4, len(s)), _Det(4, len(s)))
    value = loss.loss_weight * loss(ctx)
    assert_scalar('loss', value, case['loss'])
    value.backward()
    assert_tensors('grad_student_feats', _grads(s), case['grad_student_feats'])


def test_cwd_pppppm_cross_entropy_form():
    """The pppppM form is a cross-entropy: mmkd's KL plus the teacher's entropy term, a constant
    (same gradients). The constant is recomputed here from the teacher maps."""
    case = load_case('peers/cwd_pppppm_tau1_w5.pt')
    s, ctx = _inputs(case)
    tau, w = case['tau'], case['loss_weight']
    loss = ChannelWiseDistillLoss(tau=tau, levels=[0, 1, 2, 3], loss_weight=w)
    loss.setup(_Det(4, 4), _Det(4, 4))
    value = loss.loss_weight * loss(ctx)
    entropy = 0.0
    for t in case['teacher_feats']:
        b, c = t.shape[:2]
        p = torch.softmax(t.double().reshape(b * c, -1) / tau, dim=1)
        entropy += float(-(p * p.log()).sum()) * tau ** 2 / (b * c)
    assert_scalar('teacher entropy term', w * entropy, case['derived_teacher_entropy_term'])
    assert_scalar('loss', value + w * entropy, case['loss'])
    value.backward()
    assert_tensors('grad_student_feats', _grads(s), case['grad_student_feats'])


# ---- FGD -------------------------------------------------------------------------------------
FGD_CASES = ['fgd_retina_5lv', 'fgd_frcnn_4lv_align_4to8', 'fgd_retina_5lv_padded_img']


@pytest.mark.parametrize('name', FGD_CASES)
def test_fgd_released_masks(name):
    case = load_case(f'peers/{name}.pt')
    shapes = [tuple(case['img_shape_hw'])] * len(case['gt_boxes'])
    for lvl, feat in enumerate(case['student_feats']):
        fg, bg = fgd_masks_released(case['gt_boxes'], feat, shapes)
        assert_same(f'fg mask level {lvl}', fg, case['official_fg_masks'][lvl])
        assert_same(f'bg mask level {lvl}', bg, case['official_bg_masks'][lvl])


@pytest.mark.parametrize('name', FGD_CASES)
def test_fgd_values_and_gradients(name):
    case = load_case(f'peers/{name}.pt')
    s, ctx = _inputs(case)
    n, cs, ct = len(s), case['student_channels'], case['teacher_channels']
    loss = FGDLoss(temperature=case['temperature'], alpha_fg=case['alpha_fg'],
                   beta_bg=case['beta_bg'], gamma_attn=case['gamma_attn'],
                   lambda_global=case['lambda_global'], levels=list(range(n)),
                   mask_rule='released')
    loss.setup(_Det(cs, n), _Det(ct, n))
    loss.load_state_dict(case['mmkd_state_dict'], strict=True)
    out = loss(ctx)
    for k in ('fg', 'bg', 'attn', 'global'):
        assert_scalar(k, out[k], case[k])
    total = sum(out.values())
    assert_scalar('loss', total, case['loss'])
    total.backward()
    assert_tensors('grad_student_feats', _grads(s), case['grad_student_feats'])
    _assert_param_grads(loss, case['grad_params'])


# ---- MGD -------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', ['mgd_yzd_retina', 'mgd_yzd_frcnn_align_2to4',
                                  'mgd_razor_retina'])
def test_mgd_with_the_released_draws(name):
    """The official draws are replayed through ``MGDLoss.forward``'s ``keep_masks``."""
    case = load_case(f'peers/{name}.pt')
    s, ctx = _inputs(case)
    n, cs, ct = len(s), case['student_channels'], case['teacher_channels']
    loss = MGDLoss(mask_ratio=case['mask_ratio'], levels=list(range(n)),
                   loss_weight=case['alpha_mgd'])
    loss.setup(_Det(cs, n), _Det(ct, n))
    loss.load_state_dict(case['mmkd_state_dict'], strict=True)
    value = loss.loss_weight * loss(ctx, keep_masks=case['keep_masks'])
    assert_scalar('loss', value, case['loss'])
    value.backward()
    assert_tensors('grad_student_feats', _grads(s), case['grad_student_feats'])
    _assert_param_grads(loss, case['grad_params'])
