"""Loss-balance report and auto_balance: the arithmetic on hand-made loss dicts (every expected
number is worked out by hand in the comments), the option checks, the state round trip, the
reduction over 2 gloo CPU processes and the hook-in in DistillDetector.loss."""
import copy
import json
import logging
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.logging import MessageHub, MMLogger

from conftest import KD_CFG, REPO, tool_env
from mmkd.models.utils import LossBalancer, TrainProgress
from mmkd.models.utils.loss_balance import (balance_scale, detection_loss, keys_checksum,
                                            measure_only, parse_auto_balance, parse_report,
                                            suggested_loss_weight)
from mmkd.utils.torch_compat import safe_torch_load


@pytest.fixture(autouse=True)
def _fresh_hub():
    # the balancer reads nothing from the hub here, but other tests leave 'iter' set in it
    MessageHub.get_instance(f'loss-balance-test-{os.getpid()}-{id(object())}')
    yield


class LogCapture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append((record.levelno, record.getMessage()))

    def warnings(self):
        return [m for lvl, m in self.records if lvl >= logging.WARNING]


@pytest.fixture
def logs():
    logger = MMLogger.get_current_instance()
    cap = LogCapture()
    logger.addHandler(cap)
    yield cap
    logger.removeHandler(cap)


def t(x, grad=False):
    return torch.tensor(float(x), requires_grad=grad)


def student(det):
    """A Faster R-CNN-like student loss dict whose detection loss is ``det``: RPN lists per
    level (summed), R-CNN terms, and an accuracy that is not a loss."""
    return {'loss_rpn_cls': [t(det * 0.25), t(0.0)], 'loss_rpn_bbox': [t(det * 0.25)],
            'loss_cls': torch.tensor([det * 0.25, det * 0.25]), 'acc': t(97.0),
            'loss_bbox': t(det * 0.25)}


def balancer(loss_weights, report=True, auto=False, cfg_form='dict'):
    names = list(loss_weights)
    keys = ({n: f'model.distill_losses.{n}.loss_weight' for n in names} if cfg_form == 'dict'
            else {n: f'model.distill_losses.{i}.loss_weight' for i, n in enumerate(names)})
    return LossBalancer(loss_weights, keys, parse_report(report), parse_auto_balance(auto, names))


def step(b, det, values, owners=None, weights=None, it=0, max_iters=None, grad=False):
    """One iteration: ``values`` = {key: weighted value}; returns the balanced loss dict."""
    owners = owners or {k: k for k in values}
    losses = student(det)
    leaves = {k: t(v, grad) for k, v in values.items()}
    losses.update(leaves)
    weights = weights or {n: b.loss_weights[n] for n in set(owners.values())}
    out = b(losses, owners, weights, TrainProgress(iter=it, max_iters=max_iters))
    return (out, leaves) if grad else out


def grad_of(pair, key):
    """d out[key] / d (the term as computed) for a ``step(..., grad=True)`` result."""
    out, leaves = pair
    return float(torch.autograd.grad(out[key], leaves[key])[0])


# ---- pure functions ------------------------------------------------------------------------------
def test_detection_loss_is_the_sum_of_the_students_loss_keys_as_mmengine_parses_them():
    losses = {'loss_rpn_cls': [t(0.5), t(0.25)], 'loss_cls': torch.tensor([1.0, 3.0]),
              'acc': t(90.0), 'loss_cwd': t(10.0), 'loss_gk': t(7.0)}
    # 0.5 + 0.25 (list: sum of means) + 2.0 (tensor: mean); acc has no 'loss'; distill keys out
    assert float(detection_loss(losses, ['loss_cwd', 'loss_gk'])) == 2.75
    assert float(detection_loss({'acc': t(1.0)}, [])) == 0.0
    # by owner: a loss name and every key '<name>_...' are distillation keys, measured or not
    losses = {'loss_cls': t(1.5), 'loss_icd_mimic': t(4.0), 'loss_icd_aux_conf': t(8.0),
              'loss_icdx': t(0.25)}
    assert float(detection_loss(losses, ['loss_icd_mimic'], ['loss_icd'])) == 1.75


def test_scale_and_suggested_weight_by_hand():
    assert balance_scale(4.0, 0.5) == 0.125                       # 0.5 / 4
    assert balance_scale(0.25, 0.5) == 1.0                        # only lowered
    assert balance_scale(0.25, 0.5, only_decrease=False) == 2.0   # 0.5 / 0.25
    for bad in (0.0, -1.0, float('nan'), float('inf')):
        assert balance_scale(bad, 0.5, only_decrease=False) == 1.0
    assert suggested_loss_weight(10.0, 40.0, 0.5) == 0.125        # 10 * 0.5 / 40


def test_measure_only_keeps_the_value_and_passes_no_gradient():
    x = torch.tensor([1.5, -2.0], requires_grad=True)
    y = measure_only(x * 3)
    assert torch.equal(y, torch.tensor([4.5, -6.0]))
    (y.sum() + x.sum()).backward()
    assert torch.equal(x.grad, torch.ones(2))  # only the second term's gradient


# ---- the report ----------------------------------------------------------------------------------
def test_report_ratios_warning_and_json_schema(logs):
    b = balancer({'loss_a': 3.0, 'loss_gk': 1.0}, report=dict(iters=3, warn_ratio=1.0))
    owners = {'loss_a': 'loss_a', 'loss_gk_fg': 'loss_gk', 'loss_gk_bg': 'loss_gk'}
    seq = [(2.0, 6.0, 0.5, 1.0), (4.0, 12.0, 0.5, 1.0), (6.0, 18.0, 0.5, 1.0), (1.0, 50., 9., 9.)]
    for i, (det, a, fg, bg) in enumerate(seq):
        out = step(b, det, {'loss_a': a, 'loss_gk_fg': fg, 'loss_gk_bg': bg}, owners, it=i)
        assert float(out['loss_a']) == a and out['loss_a'].requires_grad is False  # unchanged
    rep = b.report()
    # detection loss over iterations 0-2: (2 + 4 + 6) / 3 = 4
    # loss_a: (6 + 12 + 18) / (2 + 4 + 6) = 3;  fg: 1.5 / 12 = 0.125;  bg: 3 / 12 = 0.25
    assert rep == {'version': 1, 'measured_iters': 3, 'detection_loss': 4.0,
                   'terms': {'loss_a': {'ratio': 3.0, 'scale': 1.0, 'warned': True},
                             'loss_gk_fg': {'ratio': 0.125, 'scale': 1.0, 'warned': False},
                             'loss_gk_bg': {'ratio': 0.25, 'scale': 1.0, 'warned': False}},
                   'final': {}}
    warned = logs.warnings()
    assert len(warned) == 1, warned  # once, for loss_a only
    # suggested weight: 3 * 0.5 / 3 = 0.5 (the default target 0.5)
    assert warned[0].startswith("loss balance: loss_a is 3x the student's detection loss")
    assert ('Suggested loss_weight: 0.5 instead of 3, which brings it to 0.5x: set '
            'model.distill_losses.loss_a.loss_weight=0.5, or turn on model.auto_balance=True.'
            ) in warned[0]
    assert any('loss balance over iterations 0-2: detection loss 4;' in m for _, m in logs.records)
    json.dumps(rep)


def test_warning_names_the_list_form_key_and_the_sibling_terms():
    b = balancer({'loss_gk': 2.0}, report=dict(iters=1, warn_ratio=2.0), cfg_form='list')
    step(b, 1.0, {'loss_gk_fg': 0.1, 'loss_gk_bg': 8.0},
         {'loss_gk_fg': 'loss_gk', 'loss_gk_bg': 'loss_gk'})
    assert b.report()['terms']['loss_gk_bg']['warned']
    text = b.warning_text('loss_gk_bg', 'loss_gk', 8.0)
    # 2 * 0.5 / 8 = 0.125
    assert ('set model.distill_losses.0.loss_weight=0.125 (this also scales loss_gk_fg)'
            in text), text
    # a warn_ratio below the target: the suggestion lowers the term to warn_ratio, 2 * 0.2 / 8
    low = balancer({'loss_gk': 2.0}, report=dict(iters=1, warn_ratio=0.2))
    assert 'Suggested loss_weight: 0.05 instead of 2, which brings it to 0.2x' in \
        low.warning_text('loss_gk_bg', 'loss_gk', 8.0)


def test_the_schedule_factor_is_left_out_of_the_ratio_and_in_the_final_ratio():
    # loss_weight 4, schedule factor 0.5 at iterations 0-1 (weights = 2), 1 afterwards
    b = balancer({'loss_a': 4.0}, report=dict(iters=2, final_iters=2))
    for i, (det, w, weight) in enumerate([(1.0, 1.0, 2.0), (3.0, 3.0, 2.0),
                                          (2.0, 1.0, 4.0), (2.0, 3.0, 4.0)]):
        step(b, det, {'loss_a': w}, weights={'loss_a': weight}, it=i, max_iters=4)
    rep = b.report()
    # ratio: configured values w / 0.5 = 2, 6 over det 1, 3 -> 8 / 4 = 2
    assert rep['terms']['loss_a']['ratio'] == 2.0
    # final (iterations 2-3, as added to the loss): (1 + 3) / (2 + 2) = 1
    assert rep['final'] == {'loss_a': 1.0}
    assert rep['detection_loss'] == 2.0 and rep['measured_iters'] == 2


# ---- auto_balance --------------------------------------------------------------------------------
def test_auto_balance_scales_by_hand_with_only_decrease_zero_and_delayed_terms(logs):
    b = balancer({'loss_big': 2.0, 'loss_small': 1.0, 'loss_zero': 1.0, 'loss_late': 1.0},
                 auto=dict(iters=2, target_ratio=0.5))
    # iterations 0-1: det 2 and 6 (sum 8); big 16 + 16 = 32 -> ratio 4 -> scale 0.5/4 = 0.125
    # small 0.4 + 0.4 -> 0.1 -> stays 1 (only_decrease); zero never active -> 1
    # late: 0, 0, then 1 at iterations 2-3 with det 2, 2 -> ratio 0.5 ... -> measured later
    seq = [(2.0, 16.0, 0.4, 0.0, 0.0), (6.0, 16.0, 0.4, 0.0, 0.0),
           (2.0, 16.0, 0.4, 0.0, 4.0), (2.0, 16.0, 0.4, 0.0, 4.0), (2.0, 16.0, 0.4, 0.0, 4.0)]
    outs = []
    for i, (det, big, small, zero, late) in enumerate(seq):
        outs.append(step(b, det, {'loss_big': big, 'loss_small': small, 'loss_zero': zero,
                                  'loss_late': late}, it=i, grad=True))
    rep = b.report()['terms']
    assert rep['loss_big'] == {'ratio': 4.0, 'scale': 0.125, 'warned': True}
    assert rep['loss_small'] == {'ratio': pytest.approx(0.1), 'scale': 1.0, 'warned': False}
    assert rep['loss_zero'] == {'ratio': 0.0, 'scale': 1.0, 'warned': False}
    # late: window = iterations 2-3: (4 + 4) / (2 + 2) = 2 -> scale 0.25
    assert rep['loss_late'] == {'ratio': 2.0, 'scale': 0.25, 'warned': True}
    # measured iterations: value kept, no gradient; afterwards scaled, with gradient
    for i, pair in enumerate(outs):
        assert float(pair[0]['loss_big']) == (16.0 if i < 2 else 2.0)
        assert grad_of(pair, 'loss_big') == (0.0 if i < 2 else 0.125)
        assert grad_of(pair, 'loss_small') == (0.0 if i < 2 else 1.0)
        # late: trains as configured until it starts, measured at 2-3, scaled from 4
        assert grad_of(pair, 'loss_late') == (1.0 if i < 2 else 0.0 if i < 4 else 0.25)
        assert grad_of(pair, 'loss_zero') == 1.0  # never active: left alone
    assert float(outs[4][0]['loss_late']) == 1.0 and float(outs[3][0]['loss_late']) == 4.0
    text = [m for m in logs.warnings() if 'loss_big' in m][0]
    assert 'auto_balance scales it by 0.125 (effective loss_weight 0.25, 0.5x)' in text


def test_warning_suggests_the_terms_own_weight_option_from_the_loss_modules():
    """GK's bg term has its own bg_weight, ICD's mimic its mimic_weight (whose loss_weight must
    stay 1): the warning suggests those; a loss without per-term options gets loss_weight."""
    from mmkd.models.losses.cwd import ChannelWiseDistillLoss
    from mmkd.models.methods.global_knowledge.robust_distilling import RobustDistillingModule
    from mmkd.models.methods.icd.icd_loss import InstanceConditionalDistillLoss
    losses = dict(loss_gk=RobustDistillingModule(bg_weight=4.0, loss_weight=2.0),
                  loss_icd=InstanceConditionalDistillLoss(mimic_weight=3.0),
                  loss_cwd=ChannelWiseDistillLoss(loss_weight=10.0))
    b = LossBalancer.from_detector(losses, dict(loss_gk={}, loss_icd={}, loss_cwd={}),
                                   dict(iters=1, warn_ratio=1.0), None)
    # bg: 8x -> bg_weight 4 * 0.5 / 8 = 0.25 (loss_weight 2 is part of the measured value)
    text = b.warning_text('loss_gk_bg', 'loss_gk', 8.0)
    assert ('Suggested bg_weight: 0.25 instead of 4, which brings it to 0.5x: set '
            'model.distill_losses.loss_gk.bg_weight=0.25, or turn on model.auto_balance=True.'
            ) in text, text
    assert 'also scales' not in text
    # mimic: 6x -> 3 * 0.5 / 6 = 0.25
    assert ('Suggested mimic_weight: 0.25 instead of 3, which brings it to 0.5x: set '
            'model.distill_losses.loss_icd.mimic_weight=0.25') in \
        b.warning_text('loss_icd_mimic', 'loss_icd', 6.0)
    # cwd: 40x -> 10 * 0.5 / 40 = 0.125
    assert 'set model.distill_losses.loss_cwd.loss_weight=0.125, or' in \
        b.warning_text('loss_cwd', 'loss_cwd', 40.0)
    # list form: the index, as mmengine's --cfg-options spells it
    b = LossBalancer.from_detector(losses, [{}, {}, {}], True, None)
    assert 'set model.distill_losses.0.bg_weight=0.25' in \
        b.warning_text('loss_gk_bg', 'loss_gk', 8.0)
    # ICD's aux terms are never measured, so auto_balance cannot be told about them
    with pytest.raises(ValueError, match="'loss_icd_aux_reg' is never balanced: "
                                         'InstanceConditionalDistillLoss declares it in '
                                         'balance_exclude'):
        LossBalancer.from_detector(losses, {}, True, dict(terms=dict(loss_icd_aux_reg=False)))


def test_terms_that_do_not_reach_the_student_are_not_measured_until_they_do(logs):
    """ICD's shape: aux terms only train the method's own modules; the mimic term runs on
    detached student features during bypass_iters, then reaches the student."""
    stu, own = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)

    def through(module, value, detach=False):  # value, with a graph into module's weights
        w = module.weight.detach() if detach else module.weight
        return value + 0.0 * w.sum()

    b = LossBalancer({'loss_icd': 1.0}, {'loss_icd': 'k'}, parse_report(dict(iters=2)),
                     parse_auto_balance(dict(target_ratio=0.5), ['loss_icd']), student=stu)
    owners = {'loss_icd_mimic': 'loss_icd', 'loss_icd_aux': 'loss_icd'}
    for i in range(5):
        bypass = i < 2
        mimic = through(own, through(stu, 8.0, detach=bypass))
        aux = through(own, 3.0)
        losses = dict(loss_cls=t(2.0), loss_icd_mimic=mimic, loss_icd_aux=aux)
        out = b(losses, owners, {'loss_icd': 1.0}, TrainProgress(iter=i))
        _g_stu = torch.autograd.grad(out['loss_icd_mimic'], stu.weight, allow_unused=True)[0]
        g_aux = torch.autograd.grad(out['loss_icd_aux'], own.weight)[0]
        assert g_aux is not None and torch.equal(g_aux, torch.zeros_like(g_aux))  # 0 * w: plain
        assert float(out['loss_icd_aux']) == 3.0
        if i >= 4:  # mimic measured at 2-3 (8 / 2 = 4x) -> scale 0.125
            assert float(out['loss_icd_mimic']) == 1.0
    rep = b.report()['terms']
    assert rep['loss_icd_mimic'] == {'ratio': 4.0, 'scale': 0.125, 'warned': True}
    assert rep['loss_icd_aux'] == {'ratio': 0.0, 'scale': 1.0, 'warned': False}
    assert b.state['terms']['loss_icd_mimic']['start'] == 2
    b.finish()
    assert any('loss_icd_aux was never active' in m for _, m in logs.records)


def test_only_decrease_false_raises_small_terms_and_per_term_overrides():
    b = balancer({'loss_big': 1.0, 'loss_small': 1.0, 'loss_gk': 1.0},
                 auto=dict(iters=1, target_ratio=0.5, only_decrease=False,
                           terms=dict(loss_big=dict(target_ratio=1.0), loss_gk=False,
                                      loss_gk_bg=dict(enabled=True, only_decrease=True))))
    owners = {'loss_big': 'loss_big', 'loss_small': 'loss_small', 'loss_gk_fg': 'loss_gk',
              'loss_gk_bg': 'loss_gk'}
    pair = step(b, 2.0, {'loss_big': 8.0, 'loss_small': 0.25, 'loss_gk_fg': 8.0,
                         'loss_gk_bg': 0.25}, owners, grad=True)
    assert grad_of(pair, 'loss_gk_fg') == 1.0  # disabled: the plain term, gradient included
    assert grad_of(pair, 'loss_gk_bg') == 0.0  # measured
    rep = b.report()['terms']
    assert rep['loss_big']['scale'] == 0.25        # 1.0 / (8 / 2)
    assert rep['loss_small']['scale'] == 4.0       # 0.5 / (0.25 / 2), raised
    assert rep['loss_gk_fg']['scale'] == 1.0 and rep['loss_gk_fg']['ratio'] == 4.0
    assert rep['loss_gk_bg']['scale'] == 1.0       # key override: only_decrease again
    out = step(b, 2.0, {'loss_big': 8.0, 'loss_small': 0.25, 'loss_gk_fg': 8.0,
                        'loss_gk_bg': 0.25}, owners, it=1)
    assert float(out['loss_small']) == 1.0 and float(out['loss_big']) == 2.0


def test_final_ratio_uses_the_term_as_trained():
    b = balancer({'loss_a': 1.0}, report=dict(iters=1, final_iters=2),
                 auto=dict(target_ratio=0.5))
    for i, (det, a) in enumerate([(1.0, 4.0), (2.0, 4.0), (2.0, 8.0)]):
        step(b, det, {'loss_a': a}, it=i, max_iters=3)
    # scale 0.5 / 4 = 0.125; final over iterations 1-2: (0.5 + 1) / (2 + 2) = 0.375
    assert b.report()['final'] == {'loss_a': 0.375}


def test_state_round_trip_mid_window_is_exact_and_loads_weights_only(tmp_path):
    seq = [(2.0 + i % 3, 5.0 + 2 * i, 0.1 * i) for i in range(7)]

    def run(b, lo, hi):
        for i in range(lo, hi):
            det, a, c = seq[i]
            step(b, det, {'loss_a': a, 'loss_c': c}, it=i, max_iters=7)

    opts = dict(report=dict(iters=4, final_iters=3), auto=dict(target_ratio=0.3))
    straight = balancer({'loss_a': 1.0, 'loss_c': 1.0}, **opts)
    run(straight, 0, 7)
    first = balancer({'loss_a': 1.0, 'loss_c': 1.0}, **opts)
    run(first, 0, 2)  # stop inside the window
    torch.save(dict(meta=dict(loss_balance=first.state_dict())), tmp_path / 'c.pth')
    state = safe_torch_load(tmp_path / 'c.pth')['meta']['loss_balance']
    resumed = balancer({'loss_a': 1.0, 'loss_c': 1.0}, **opts)
    resumed.load_state_dict(state)
    run(resumed, 2, 7)
    assert resumed.report() == straight.report()
    assert resumed.state_dict() == straight.state_dict()
    assert straight.report()['terms']['loss_a']['scale'] < 1.0


def test_resume_without_state_is_an_error_with_auto_balance_and_a_warning_otherwise(logs):
    b = balancer({'loss_a': 1.0}, auto=True)
    with pytest.raises(RuntimeError, match='LossBalanceHook'):
        step(b, 1.0, {'loss_a': 1.0}, it=40)
    b = balancer({'loss_a': 1.0}, report=dict(iters=2))
    step(b, 1.0, {'loss_a': 5.0}, it=40)
    assert any('without loss-balance state' in m for m in logs.warnings())
    assert b.report()['measured_iters'] == 0  # the first iterations were not seen


def test_option_errors_name_the_valid_values():
    with pytest.raises(ValueError, match=r"'target'.*did you mean 'target_ratio'.*Valid options: "
                                         r'iters, target_ratio, only_decrease, terms'):
        parse_auto_balance(dict(target=0.5), ['loss_a'])
    with pytest.raises(ValueError, match='warn_ratio must be a positive number'):
        parse_report(dict(warn_ratio=0))
    with pytest.raises(ValueError, match='iters must be an integer >= 1'):
        parse_auto_balance(dict(iters=0), ['loss_a'])
    with pytest.raises(ValueError, match='only_decrease must be True or False'):
        parse_auto_balance(dict(only_decrease='yes'), ['loss_a'])
    with pytest.raises(ValueError, match="'loss_b' is neither.*Loss names: loss_a"):
        parse_auto_balance(dict(terms=dict(loss_b=False)), ['loss_a'])
    with pytest.raises(ValueError, match=r"terms\['loss_a_fg'\].*Valid options: enabled, "
                                         'target_ratio, only_decrease'):
        parse_auto_balance(dict(terms=dict(loss_a_fg=dict(ratio=1))), ['loss_a'])
    with pytest.raises(ValueError, match='must be True, False or a dict'):
        parse_report('yes')
    assert parse_report(False) is None and parse_auto_balance(None, []) is None
    assert parse_auto_balance(True, ['loss_a'])['target_ratio'] == 0.5


# ---- two processes -------------------------------------------------------------------------------
DDP_SCRIPT = r'''
import json, os, sys
import torch, torch.distributed as tdist
sys.path.insert(0, {repo!r})
from mmengine.logging import MessageHub
from mmkd.models.utils import LossBalancer, TrainProgress
from mmkd.models.utils.loss_balance import parse_auto_balance, parse_report


def run(rank):
    MessageHub.get_instance('ddp-test')
    names = ['loss_a', 'loss_b']
    b = LossBalancer({{'loss_a': 1.0, 'loss_b': 1.0}}, {{n: n for n in names}},
                     parse_report(dict(iters=2)),
                     parse_auto_balance(dict(target_ratio=0.5), names))
    # rank 0 / rank 1 values; means over the ranks, by hand:
    #   det: it0 (1 + 3)/2 = 2, it1 (2 + 2)/2 = 2 -> sum 4
    #   loss_a: it0 (2 + 6)/2 = 4, it1 (8 + 0)/2 = 4 -> 8 / 4 = ratio 2 -> scale 0.25
    #   loss_b: it0 (0.2 + 0)/2 = 0.1, it1 0.1 -> 0.2 / 4 = 0.05 -> scale 1
    vals = [[(1.0, 2.0, 0.2), (2.0, 8.0, 0.2)], [(3.0, 6.0, 0.0), (2.0, 0.0, 0.0)]][rank]
    for i, (det, a, bb) in enumerate(vals):
        losses = dict(loss_cls=torch.tensor(det), loss_a=torch.tensor(a), loss_b=torch.tensor(bb))
        b(losses, {{'loss_a': 'loss_a', 'loss_b': 'loss_b'}}, {{'loss_a': 1.0, 'loss_b': 1.0}},
          TrainProgress(iter=i))
    out = dict(report=b.report())
    # the ranks compute different NUMBERS of terms: the fixed-size header finds it before an
    # all-reduce of a different size on each rank (which could hang), and every rank stops
    d = LossBalancer({{'loss_a': 1.0}}, {{'loss_a': 'k'}}, parse_report(True), None)
    keys = [['loss_a_x'], ['loss_a_x', 'loss_a_y']][rank]
    try:
        d(dict(loss_cls=torch.tensor(1.0), **{{k: torch.tensor(1.0) for k in keys}}),
          {{k: 'loss_a' for k in keys}}, {{'loss_a': 1.0}}, TrainProgress(iter=0))
        out['count_mismatch'] = 'no error'
    except RuntimeError as exc:
        out['count_mismatch'] = str(exc)
    # the ranks compute differently named terms: every rank stops with the same error
    c = LossBalancer({{'loss_a': 1.0}}, {{'loss_a': 'k'}}, parse_report(True), None)
    key = ['loss_a_x', 'loss_a_y'][rank]
    try:
        c(dict(loss_cls=torch.tensor(1.0), **{{key: torch.tensor(1.0)}}), {{key: 'loss_a'}},
          {{'loss_a': 1.0}}, TrainProgress(iter=0))
        out['mismatch'] = 'no error'
    except RuntimeError as exc:
        out['mismatch'] = str(exc)
    with open(os.path.join({out!r}, f'rank{{rank}}.json'), 'w') as f:
        json.dump(out, f)
    tdist.barrier()


rank = int(os.environ['RANK'])
# the ranks meet through a file (new for each test): no port is picked first and bound later
tdist.init_process_group('gloo', init_method='file://' + {store!r}, rank=rank, world_size=2)
try:
    run(rank)
finally:
    tdist.destroy_process_group()  # a gloo group left open can abort the interpreter at exit
'''


def test_two_gloo_processes_decide_the_same_from_the_mean_over_ranks(tmp_path):
    script = tmp_path / 'ddp.py'
    script.write_text(DDP_SCRIPT.format(repo=REPO, out=str(tmp_path),
                                        store=str(tmp_path / 'rdzv')))
    procs = []
    for rank in range(2):
        env = tool_env(dict(RANK=str(rank)))  # no MASTER_PORT: the ranks meet through a file
        procs.append(subprocess.Popen([sys.executable, str(script)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), '\n'.join(logs)[-4000:]
    outs = [json.loads((tmp_path / f'rank{r}.json').read_text()) for r in range(2)]
    assert outs[0]['report'] == outs[1]['report']
    terms = outs[0]['report']['terms']
    assert terms['loss_a']['ratio'] == 2.0 and terms['loss_a']['scale'] == 0.25
    assert terms['loss_b']['ratio'] == pytest.approx(0.05) and terms['loss_b']['scale'] == 1.0
    assert outs[0]['report']['detection_loss'] == 2.0
    for out in outs:
        assert 'the ranks computed different distillation terms' in out['mismatch']
        assert 'the ranks computed different distillation terms' in out['count_mismatch']


def test_keys_checksum_depends_on_names_and_order():
    assert keys_checksum(['a', 'b']) != keys_checksum(['b', 'a'])
    assert keys_checksum(['a', 'b']) == keys_checksum(['a', 'b']) < 2 ** 32


# ---- DistillDetector -----------------------------------------------------------------------------
def _kd_model(**model_opts):
    from mmdet.registry import MODELS
    from mmengine.config import Config, DictAction
    cfg = Config.fromfile(osp.join(REPO, KD_CFG))
    cfg.model.teacher_ckpt = None
    opts = {k: DictAction._parse_iterable(v) for k, v in model_opts.items()}
    cfg.merge_from_dict(opts)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.train()


def _batch(model):
    from mmdet.testing import demo_mm_inputs
    torch.manual_seed(1)
    packed = demo_mm_inputs(2, [[3, 64, 64], [3, 64, 64]], num_classes=8)
    return model.data_preprocessor(packed, True)


def test_distill_detector_auto_balance_from_cfg_options_measures_without_gradient():
    model = _kd_model(**{'model.auto_balance': 'True', 'model.balance_report.iters': '2'})
    assert model.loss_balance.auto is not None and model.loss_balance.iters == 2
    data = _batch(model)
    params = [p for p in model.student.parameters() if p.requires_grad]
    # with auto_balance, measuring: the student's gradient is its detection loss's alone
    torch.manual_seed(5)
    losses = model.loss(data['inputs'], copy.deepcopy(data['data_samples']))
    state = model.loss_balance.state['terms']
    assert set(state) == {'loss_kd_fpn', 'loss_kd_roi_kl'}
    assert state['loss_kd_fpn']['start'] == 0  # reaches the student: measured from the start
    assert float(losses['loss_kd_fpn']) > 0
    total = sum(v.mean() if torch.is_tensor(v) else sum(x.mean() for x in v)
                for k, v in losses.items() if 'loss' in k)
    got = torch.autograd.grad(total, params, allow_unused=True)
    torch.manual_seed(5)
    alone = model.student.loss(data['inputs'], copy.deepcopy(data['data_samples']))
    ref_total = sum(v.mean() if torch.is_tensor(v) else sum(x.mean() for x in v)
                    for k, v in alone.items() if 'loss' in k)
    ref = torch.autograd.grad(ref_total, params, allow_unused=True)
    for g, r in zip(got, ref):
        assert (g is None and r is None) or torch.allclose(g, r, atol=1e-7, rtol=1e-5)
    # distillation keys are not part of the detection loss
    det = float(detection_loss(losses, ['loss_kd_fpn', 'loss_kd_roi_kl']))
    assert det == pytest.approx(float(ref_total), rel=1e-6)


def test_distill_detector_report_default_on_changes_nothing_and_can_be_switched_off():
    on, off = _kd_model(), _kd_model(**{'model.balance_report': 'False'})
    assert off.loss_balance is None and on.loss_balance.auto is None
    data = _batch(on)
    torch.manual_seed(5)
    a = on.loss(data['inputs'], copy.deepcopy(data['data_samples']))
    torch.manual_seed(5)
    b = off.loss(data['inputs'], copy.deepcopy(data['data_samples']))
    for k in ('loss_kd_fpn', 'loss_kd_roi_kl', 'loss_cls'):
        assert torch.equal(a[k], b[k])
    assert a['loss_kd_fpn'].requires_grad


def test_bad_auto_balance_option_fails_at_build_time():
    with pytest.raises(ValueError, match='did you mean'):
        _kd_model(**{'model.auto_balance.target': '0.5'})


def test_no_shipped_config_turns_auto_balance_on():
    """Configs named after a paper keep the released weights: none sets auto_balance."""
    import re
    found, seen = [], 0
    for root, _, files in os.walk(osp.join(REPO, 'configs')):
        for f in files:
            if not f.endswith('.py'):
                continue
            seen += 1
            with open(osp.join(root, f)) as fh:
                code = '\n'.join(line.split('#', 1)[0] for line in fh)
            if re.search(r'auto_balance', code):
                found.append(osp.join(root, f))
    assert seen > 40 and not found


def test_icd_aux_terms_are_not_measured_and_nothing_runs_between_the_windows(monkeypatch):
    """ICD through DistillDetector.loss: the aux terms (balance_exclude) are logged and trained
    but never measured nor counted in the detection loss; once the mimic term's window is over,
    an iteration walks no autograd graph and reduces nothing until the final window."""
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    from mmkd.models.utils import loss_balance as lb
    register_all_modules()
    cfg = Config.fromfile(osp.join(REPO, 'configs/synthetic/kd_icd_r34w32_r18w16_12e_synthetic.py'))
    cfg.model.teacher_ckpt = None
    cfg.model.distill_losses.loss_icd.bypass_iters = 0  # mimic reaches the student at once
    cfg.model.balance_report = dict(iters=2, final_iters=1)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).train()
    packed = demo_mm_inputs(2, [[3, 64, 64], [3, 64, 64]], num_items=[2, 1], num_classes=8,
                            use_box_type=False)
    data = model.data_preprocessor(packed, True)
    calls = dict(walk=0, reduce=0)

    def counted(name):
        real = getattr(lb, name)

        def wrapper(*args, **kwargs):
            calls['walk' if name == 'reaches_parameters' else 'reduce'] += 1
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(lb, 'reaches_parameters', counted('reaches_parameters'))
    monkeypatch.setattr(lb, 'mean_across_ranks', counted('mean_across_ranks'))
    hub = MessageHub.get_current_instance()
    hub.update_info('max_iters', 6)
    per_iter, student_det = [], 0.0
    for it in range(6):
        hub.update_info('iter', it)
        before = dict(calls)
        losses = model.loss(data['inputs'], copy.deepcopy(data['data_samples']))
        per_iter.append((calls['walk'] - before['walk'], calls['reduce'] - before['reduce']))
        assert losses['loss_icd_aux_conf'].requires_grad  # still logged and trained
        if it < 2:  # the first window: Faster R-CNN's four loss entries, summed by hand
            student_det += sum(float(sum(x.mean() for x in v) if isinstance(v, list)
                                     else v.mean()) for k, v in losses.items()
                               if k in ('loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox'))
    # iteration 0: one walk (mimic, not active yet), one reduction; 1: the window goes on
    # without a walk; 2-4: nothing at all; 5: the final window (a reduction, no walk)
    assert per_iter == [(1, 1), (0, 1), (0, 0), (0, 0), (0, 0), (0, 1)], per_iter
    state = model.loss_balance.state
    assert set(state['terms']) == {'loss_icd_mimic'}
    assert state['terms']['loss_icd_mimic']['decided']
    assert set(state['final']['sums']) == {'loss_icd_mimic'}
    # the detection loss of the first window is the student's four entries, no ICD term in it
    det_sum, det_n = state['det_first']
    assert det_n == 2 and det_sum == pytest.approx(student_det, rel=1e-6)
