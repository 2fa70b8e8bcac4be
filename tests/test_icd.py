"""ICD: tokens and padding masks, instances and priors, the decoder's attention, the mimicking
and auxiliary losses against hand computations, the warm-up, the inheriting start, and the two
optimisers through a real save/resume."""
import json
import math
import os.path as osp
import sys

import pytest
import torch
from mmdet.models.layers import SinePositionalEncoding
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.logging import MessageHub

from conftest import REPO, data_options, run_tool
from mmkd.models.methods.icd import (InstanceBatch, InstanceConditionalDistillLoss, InstanceDecoder,
                                     InstanceEncoder, InstancePriors, build_instances,
                                     flatten_levels, level_padding_mask, num_slots, scale_bins,
                                     weighted_value_mimic)
from test_e2e_evidence import read_scalars

ICD_CFG = 'configs/synthetic/kd_icd_r34w32_r18w16_12e_synthetic.py'


# ---- tokens -------------------------------------------------------------------------------------
def test_padding_masks_and_tokens_for_images_of_different_sizes():
    batch_hw, shapes = (64, 96), [(64, 96), (40, 50)]
    feats = [torch.randn(2, 3, 16, 24), torch.randn(2, 3, 8, 12)]  # strides 4 and 8
    seq = flatten_levels(feats, shapes, batch_hw, SinePositionalEncoding(4, normalize=True))
    assert seq.tokens.shape == (2, 16 * 24 + 8 * 12, 3) and seq.pos.shape == (2, 480, 8)
    assert seq.level_sizes == ((16, 24), (8, 12))
    # image 0 fills the batch; image 1 covers ceil(40/4) x ceil(50/4) = 10 x 13 cells at
    # stride 4 and ceil(40/8) x ceil(50/8) = 5 x 7 at stride 8
    assert not seq.pad_mask[0].any()
    assert int((~seq.pad_mask[1]).sum()) == 10 * 13 + 5 * 7
    m4 = level_padding_mask((16, 24), batch_hw, shapes, torch.device('cpu'))[1]
    assert not m4[:10, :13].any() and m4[10:].all() and m4[:, 13:].all()
    # tokens are the maps flattened level by level, row-major
    assert torch.equal(seq.tokens[1, 16 * 24 + 5], feats[1][1, :, 0, 5])
    # positions are zero on padding and normalised over the valid region only
    assert torch.all(seq.pos[1][seq.pad_mask[1]] == 0)
    assert torch.allclose(seq.pos[0, :16 * 24].view(16, 24, 8)[-1, -1],
                          seq.pos[1, :16 * 24].view(16, 24, 8)[9, 12], atol=1e-4)


# ---- instances and priors -----------------------------------------------------------------------
def test_slot_count_and_size_bins():
    assert [num_slots(n, 5, 100) for n in (0, 1, 3, 20, 150)] == [1, 6, 18, 100, 150]
    assert scale_bins(torch.tensor([10., 100., 200., 400., 1000.])).argmax(1).tolist() == \
        [0, 1, 2, 3, 4]


def test_instances_real_first_fake_from_priors_points_inside_boxes():
    torch.manual_seed(0)
    priors = InstancePriors(3)
    priors.class_freq.copy_(torch.tensor([0.0, 1.0, 0.0]))  # every fake instance is class 1
    gt = [torch.tensor([[10., 20., 50., 60.], [0., 0., 30., 10.]]), torch.zeros(0, 4)]
    labels = [torch.tensor([2, 0]), torch.zeros(0, dtype=torch.long)]
    ins = build_instances(gt, labels, [(100, 200), (80, 80)], priors, neg_pos_ratio=2,
                          max_instances=50)
    assert ins.labels.shape == (2, 6)  # image 0: 2 real + 4 fake; image 1: 1 fake, 5 padded
    assert ins.real.tolist() == [[True, True] + [False] * 4, [False] * 6]
    assert ins.valid.sum(1).tolist() == [6, 1]
    assert ins.labels[0, :2].tolist() == [2, 0] and (ins.labels[0, 2:] == 1).all()
    assert torch.allclose(ins.boxes[0, 0], torch.tensor([0.05, 0.2, 0.25, 0.6]))
    assert torch.allclose(ins.wh_px[0, 0], torch.tensor([40., 40.]))
    b, p = ins.boxes[ins.valid], ins.points[ins.valid]
    assert (p >= b[:, :2]).all() and (p <= b[:, 2:]).all()  # jitter 0.3 stays inside


def test_priors_are_fitted_on_the_training_annotations(synthetic_data):
    from mmdet.datasets import CocoDataset

    from mmkd.datasets import SYNTHETIC_CLASSES
    root = synthetic_data['data_root']
    ds = CocoDataset(data_root=root, ann_file='annotations/instances_train.json',
                     data_prefix=dict(img='train/'), metainfo=dict(classes=SYNTHETIC_CLASSES),
                     pipeline=[], filter_cfg=None)
    priors = InstancePriors(len(SYNTHETIC_CLASSES))
    n = priors.fit(ds)
    coco = json.load(open(osp.join(root, 'annotations/instances_train.json')))
    names = {c['id']: c['name'] for c in coco['categories']}
    images = {im['id']: im for im in coco['images']}
    counts = torch.zeros(len(SYNTHETIC_CLASSES))
    widths = {}
    for a in coco['annotations']:
        c = SYNTHETIC_CLASSES.index(names[a['category_id']])  # label order, not string order
        counts[c] += 1
        widths.setdefault(c, []).append(a['bbox'][2] / images[a['image_id']]['width'])
    assert n == len(coco['annotations'])
    assert torch.allclose(priors.class_freq.float(), counts / counts.sum())
    c = max(widths, key=lambda k: len(widths[k]))
    assert priors.wh_mean[c, 0].item() == pytest.approx(sum(widths[c]) / len(widths[c]),
                                                        rel=1e-5)
    assert bool(priors.fitted)


# ---- decoder ------------------------------------------------------------------------------------
def _decoder_inputs(seed=0, b=2, k=5, s=7, c=6):
    torch.manual_seed(seed)
    tokens, pos = torch.randn(b, s, c), torch.randn(b, s, 8)
    pad = torch.zeros(b, s, dtype=torch.bool)
    pad[1, 4:] = True
    real = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    return torch.randn(b, k, 8), tokens, pos, pad, real


def _reference_attention(dec, queries, tokens, pos, pad, real, temperature):
    """The decoder written out independently, head by head and query by query, from its
    parameters: ``A = (q W_q + b_q) / sqrt(d) . ((x + p W_p + b_p) W_k + b_k)``, -inf on padding;
    token weights ``sum over real k of softmax(A_k / T)``; output
    ``LN(q + W_o [softmax(A_k) V]) -> LN(. + FFN(.))``."""
    lin = torch.nn.functional.linear
    b, k, _ = queries.shape
    h, d = dec.num_heads, dec.head_dims
    keys = lin(tokens + lin(pos, dec.pos_proj.weight, dec.pos_proj.bias), dec.k_proj.weight,
               dec.k_proj.bias)
    vals = lin(tokens, dec.v_proj.weight, dec.v_proj.bias)
    qs = lin(queries, dec.q_proj.weight, dec.q_proj.bias)
    weight = torch.zeros(b, h, tokens.shape[1])
    attended = torch.zeros(b, k, h * d)
    for bi in range(b):
        valid = ~pad[bi]
        for hi in range(h):
            sl = slice(hi * d, (hi + 1) * d)
            kk, vv = keys[bi, valid, sl], vals[bi, valid, sl]
            for ki in range(k):
                logits = kk @ qs[bi, ki, sl] / math.sqrt(d)  # (S_valid,)
                attended[bi, ki, sl] = torch.softmax(logits, 0) @ vv
                if real[bi, ki]:
                    weight[bi, hi, valid] += torch.softmax(logits / temperature, 0)
    x = dec.norm1(queries + lin(attended, dec.out_proj.weight, dec.out_proj.bias))
    return dec.norm2(x + dec.ffn(x)), weight


@pytest.mark.parametrize('temperature', [0.5, 2.0])
def test_token_weights_and_output_equal_a_reference_attention_at_temperature(temperature):
    """Token weights are softmax(A / T) of the 1/sqrt(d)-scaled logits, summed over the real
    instances; the decoded queries use softmax(A) itself (T does not enter them)."""
    torch.manual_seed(0)
    dec = InstanceDecoder(6, embed_dims=8, num_heads=2, ffn_dims=16, pos_dims=8)
    for p in dec.parameters():  # spread logits: the temperature and sqrt(d) change the weights
        p.data.normal_(0, 0.6)
    q, tokens, pos, pad, real = _decoder_inputs()
    with torch.no_grad():
        decoded, values, weight = dec(q, tokens, pos, pad, real, temperature=temperature)
        want_out, want_w = _reference_attention(dec, q, tokens, pos, pad, real, temperature)
        _, _, weight_t1 = dec(q, tokens, pos, pad, real, temperature=1.0)
    assert decoded.shape == (2, 5, 8) and values.shape == (2, 2, 7, 4)
    assert weight.shape == (2, 2, 7) and not weight.requires_grad
    torch.testing.assert_close(weight, want_w, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(decoded, want_out, rtol=1e-5, atol=1e-5)
    # the weights depend on T (the check above could not pass at T = 1 by accident) ...
    assert (weight - weight_t1).abs().max() > 0.05
    # ... and each head's weights still sum to the number of real instances, 0 on padding
    torch.testing.assert_close(weight.sum(-1), torch.tensor([[3., 3.], [1., 1.]]))
    assert torch.all(weight[1, :, 4:] == 0)


def test_the_loss_passes_its_temperature_to_the_token_weights():
    """InstanceConditionalDistillLoss(temperature=T): the mimic term weights the value errors
    with softmax(A / T) of the decoder's logits (checked on given instances)."""
    loss = InstanceConditionalDistillLoss(num_classes=2, student_channels=8, teacher_channels=8,
                                          embed_dims=8, num_heads=2, ffn_dims=16,
                                          num_pos_feats=4, temperature=3.0, bypass_iters=0)
    loss.setup(torch.nn.Module(), torch.nn.Module())
    torch.manual_seed(3)
    for p in loss.parameters():
        p.data.normal_(0, 1.0)
    from mmdet.structures import DetDataSample

    from mmkd.models import DistillContext
    s = (torch.randn(1, 8, 4, 4), )
    t = (torch.randn(1, 8, 4, 4), )
    ds = DetDataSample(metainfo=dict(img_shape=(32, 32), batch_input_shape=(32, 32)))
    ins = InstanceBatch(labels=torch.tensor([[0, 1]]),
                        boxes=torch.tensor([[[0.1, 0.2, 0.5, 0.4], [0.5, 0.5, 0.9, 1.0]]]),
                        points=torch.tensor([[[0.2, 0.3], [0.7, 0.8]]]),
                        wh_px=torch.tensor([[[13., 6.], [13., 16.]]]),
                        real=torch.tensor([[True, True]]), valid=torch.tensor([[True, True]]))
    got = loss(DistillContext(None, None, [ds], s, t), instances=ins)['mimic']
    # the same step with the weights computed by the reference attention at T = 3
    from mmkd.models.methods.icd import flatten_levels as flat
    seq = flat(t, [(32, 32)], (32, 32), loss.pos_encoder)
    with torch.no_grad():
        _, w = _reference_attention(loss.decoder, loss.encoder(ins), seq.tokens, seq.pos,
                                    seq.pad_mask, ins.real, 3.0)
        vs = loss.decoder.split_heads(loss.student_value(s[0].flatten(2).transpose(1, 2)))
        vt = loss.decoder.values(seq.tokens)
    want = 8.0 * weighted_value_mimic(vs, vt, w)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    with torch.no_grad():
        _, w1 = _reference_attention(loss.decoder, loss.encoder(ins), seq.tokens, seq.pos,
                                     seq.pad_mask, ins.real, 1.0)
    assert abs(8.0 * weighted_value_mimic(vs, vt, w1).item() - got.item()) > 1e-3 * got.item()


def test_chunked_attention_matches_one_pass_values_and_gradients():
    dec = InstanceDecoder(6, embed_dims=8, num_heads=2, ffn_dims=16, pos_dims=8)
    outs = []
    for chunk in (1 << 30, 1):  # one pass, then one query per chunk (checkpointed)
        dec.chunk_bytes = chunk
        dec.zero_grad()
        q, tokens, pos, pad, real = _decoder_inputs()
        q.requires_grad_(True)
        decoded, values, weight = dec(q, tokens, pos, pad, real)
        decoded.square().sum().backward()
        outs.append((decoded.detach(), weight, q.grad.clone(), dec.k_proj.weight.grad.clone()))
    for a, b in zip(*outs):
        assert torch.allclose(a, b, atol=1e-6)


def _ln(v):
    mean = sum(v) / len(v)
    var = sum((x - mean) ** 2 for x in v) / len(v)
    return [(x - mean) / math.sqrt(var + 1e-5) for x in v]


def test_value_mimicking_loss_equals_a_hand_computation():
    torch.manual_seed(1)
    b, h, s, d = 2, 2, 3, 3
    vs, vt = torch.randn(b, h, s, d), torch.randn(b, h, s, d)
    m = torch.tensor([[[0.5, 1.5, 0.0], [1.0, 0.5, 0.5]], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    expected = 0.0
    for bi in range(b):
        for hi in range(h):
            ls = [_ln(vs[bi, hi, si].tolist()) for si in range(s)]
            lt = [_ln(vt[bi, hi, si].tolist()) for si in range(s)]
            total = max(sum(m[bi, hi].tolist()), 1e-6)
            for ci in range(d):
                num = sum(m[bi, hi, si].item() * (ls[si][ci] - lt[si][ci]) ** 2
                          for si in range(s))
                expected += num / total
    expected /= b * h * d  # the image without GT adds 0 but counts in the mean
    assert weighted_value_mimic(vs, vt, m).item() == pytest.approx(expected, rel=1e-5)


def test_aux_losses_equal_a_hand_computation():
    enc = InstanceEncoder(2, embed_dims=8, num_pos_feats=4)
    ins = InstanceBatch(labels=torch.tensor([[0, 1]]),
                        boxes=torch.tensor([[[0.1, 0.2, 0.5, 0.4], [0.0, 0.0, 0.2, 0.2]]]),
                        points=torch.tensor([[[0.2, 0.3], [0.1, 0.1]]]),
                        wh_px=torch.tensor([[[40., 20.], [20., 20.]]]),
                        real=torch.tensor([[True, False]]), valid=torch.tensor([[True, True]]))
    out = torch.tensor([[[2.0, 0.0, 0.0, 0.0, 0.0], [-1.0, 1.0, 1.0, 1.0, 1.0]]])

    class Fixed(torch.nn.Module):  # fixed predictions: the aux head's weights do not matter
        def forward(self, x):
            return out

    enc.predictor = Fixed()
    conf, reg = enc.aux_loss(torch.zeros(1, 2, 8), ins)
    bce = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-1.0))) / 2
    # real instance: edges (0.1, 0.1, 0.3, 0.1) over sizes (0.4, 0.2, 0.4, 0.2); sigmoid(0)=0.5
    reg_hand = abs(0.5 - 0.1) / 0.4 + abs(0.5 - 0.1) / 0.2 + abs(0.5 - 0.3) / 0.4 + \
        abs(0.5 - 0.1) / 0.2
    assert conf.item() == pytest.approx(bce, rel=1e-5)
    assert reg.item() == pytest.approx(reg_hand, rel=1e-5)
    assert enc.descriptors(ins).shape == (1, 2, 2 + 8 + 10)


# ---- the loss in a DistillDetector --------------------------------------------------------------
def _model(**loss_overrides):
    register_all_modules()
    cfg = Config.fromfile(osp.join(REPO, ICD_CFG))
    cfg.model.teacher_ckpt = None
    cfg.model.distill_losses.loss_icd.update(loss_overrides)
    return cfg, MODELS.build(cfg.model)


def _batch(model):
    torch.manual_seed(0)
    packed = demo_mm_inputs(2, [[3, 96, 96], [3, 64, 96]], num_items=[3, 0], num_classes=8,
                            use_box_type=False)
    return model.data_preprocessor(packed, True)


@pytest.mark.parametrize('it,flows', [(0, False), (5, True)])
def test_student_features_are_detached_during_the_warm_up(it, flows):
    _, model = _model(bypass_iters=5)
    MessageHub.get_current_instance().update_info('iter', it)
    losses = model(**_batch(model), mode='loss')
    assert set(k for k in losses if 'icd' in k) == {'loss_icd_mimic', 'loss_icd_aux_conf',
                                                    'loss_icd_aux_reg'}
    losses['loss_icd_mimic'].backward()
    neck_grad = model.student.neck.fpn_convs[0].conv.weight.grad
    assert (neck_grad is not None and neck_grad.abs().sum() > 0) == flows
    assert model.distill_losses.loss_icd.student_value.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())


def test_inherit_moved_to_the_distiller_option():
    """ICD's private ``inherit`` became DistillDetector's ``init_student_from_teacher`` (tested
    in tests/test_init_from_teacher.py); the old key fails with the fix, or warns when False."""
    with pytest.raises(ValueError, match='init_student_from_teacher'):
        _model(inherit=True)
    with pytest.warns(DeprecationWarning, match='init_student_from_teacher'):
        _model(inherit=False)
    for name in ('retinanet', 'faster_rcnn', 'fcos', 'mask_rcnn', 'solov2', 'condinst'):
        cfg = Config.fromfile(osp.join(REPO, f'configs/kd/{name}_r101_r50_icd.py'))
        assert cfg.model.init_student_from_teacher, name  # the released ICD recipes inherit
        assert 'inherit' not in cfg.model.distill_losses.loss_icd, name


def test_icd_config_builds_two_optimisers_over_disjoint_parameters():
    from mmengine.optim import build_optim_wrapper
    cfg, model = _model()
    wrappers = build_optim_wrapper(model, cfg.optim_wrapper)
    assert list(wrappers.keys()) == ['student', 'distill']
    owned = {k: {id(p) for g in w.optimizer.param_groups for p in g['params']}
             for k, w in wrappers.items()}
    assert not owned['student'] & owned['distill']
    assert owned['distill'] == {id(p) for p in model.distill_losses.parameters()}
    assert owned['student'] | owned['distill'] == {id(p) for p in model.parameters()}
    assert type(wrappers['distill'].optimizer).__name__ == 'AdamW'


# ---- two optimisers through a real run, saved and resumed ---------------------------------------
def _icd_args(work, data, teacher_ckpt, epochs):
    return ['tools/train.py', ICD_CFG, '--work-dir', str(work), '--cfg-options',
            *data_options(data), f'model.teacher_ckpt={teacher_ckpt}',
            'model.distill_losses.loss_icd.bypass_iters=2', f'train_cfg.max_epochs={epochs}',
            'train_cfg.val_interval=10', 'default_hooks.checkpoint.interval=1',
            'param_scheduler.student.0.end=4', 'default_hooks.logger.interval=1']


def test_two_optimisers_step_and_resume_exactly(tmp_path, synthetic_data, teacher_ckpt):
    straight, split = tmp_path / 'straight', tmp_path / 'split'
    run_tool(_icd_args(straight, synthetic_data, teacher_ckpt, 2))
    run_tool(_icd_args(split, synthetic_data, teacher_ckpt, 1))
    proc = run_tool(_icd_args(split, synthetic_data, teacher_ckpt, 2) + ['--resume'])
    log = proc.stdout + proc.stderr
    assert 'Epoch(train) [1]' not in log and 'Epoch(train) [2][4/4]' in log, log[-3000:]
    assert 'distill.lr' in log
    # the logged values (not the config dump): every ICD term at every one of the 8 steps
    steps = read_scalars(straight)
    assert [x['step'] for x in steps] == list(range(1, 9))
    for x in steps:
        for k in ('loss_icd_mimic', 'loss_icd_aux_conf', 'loss_icd_aux_reg'):
            assert math.isfinite(x[k]) and x[k] > 0, (x['step'], k, x[k])
    a = torch.load(straight / 'epoch_2.pth', map_location='cpu', weights_only=False)
    b = torch.load(split / 'epoch_2.pth', map_location='cpu', weights_only=False)
    assert set(a['optimizer']) >= {'student', 'distill'}
    adam = a['optimizer']['distill']['state']
    assert adam and all(int(s['step']) == 8 for s in adam.values())  # 4 iterations x 2 epochs
    assert any('momentum_buffer' in s for s in a['optimizer']['student']['state'].values())
    assert set(a['param_schedulers']) == {'student', 'distill'}
    for k, v in a['state_dict'].items():
        assert torch.equal(v, b['state_dict'][k]), k
    for name in ('student', 'distill'):
        for pid, st in a['optimizer'][name]['state'].items():
            for key, val in st.items():
                assert torch.equal(torch.as_tensor(val),
                                   torch.as_tensor(b['optimizer'][name]['state'][pid][key]))
    assert any(k.startswith('distill_losses.loss_icd.priors.') for k in a['state_dict'])


def test_two_optimisers_under_dist_train_two_cpu_processes(tmp_path, synthetic_data,
                                                            teacher_ckpt):
    args = _icd_args(tmp_path, synthetic_data, teacher_ckpt, 1)[1:]
    # no PORT: the launcher binds a free port itself (torchrun --standalone), no race
    proc = run_tool(['bash', 'tools/dist_train.sh', args[0], '2', *args[1:]],
                    env=dict(PYTHON=sys.executable))
    log = proc.stdout + proc.stderr
    assert 'Distributed training: True' in log and 'Epoch(train) [1][2/2]' in log, log[-3000:]
    # both ranks tore the process group down before exiting (no abort at interpreter exit)
    assert 'terminate called' not in log and log.count('mmkd: process group closed') == 2, \
        log[-3000:]
    ckpt = torch.load(tmp_path / 'epoch_1.pth', map_location='cpu', weights_only=False)
    assert all(int(s['step']) == 2 for s in ckpt['optimizer']['distill']['state'].values())


def test_optimiser_dict_long_form_and_errors():
    from mmkd.engine import DistillOptimWrapperConstructor
    _, model = _model()
    sgd = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01))
    adam = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4),
                params=['distill_losses.loss_icd.encoder'])
    wrappers = DistillOptimWrapperConstructor(dict(student=sgd, aux=adam))(model)
    assert list(wrappers.keys()) == ['student', 'aux']
    enc = {id(p) for p in model.distill_losses.loss_icd.encoder.parameters()}
    student = {id(p) for g in wrappers['student'].optimizer.param_groups for p in g['params']}
    assert not enc & student and {id(p) for p in model.student.parameters()} <= student
    with pytest.raises(KeyError, match='no module named'):
        DistillOptimWrapperConstructor(dict(student=sgd, aux=dict(adam, params=['nope'])))(model)
    with pytest.raises(ValueError, match='exactly one wrapper'):
        DistillOptimWrapperConstructor(dict(a=sgd, b=sgd))


# ---- released conventions as options --------------------------------------------------------
def _wide_priors(**kw):
    """Priors whose boxes are large and spread (many draws hit the range and the border)."""
    priors = InstancePriors(2, **kw)
    priors.wh_mean.fill_(0.35)
    priors.wh_std.fill_(0.3)
    return priors


def test_fake_boxes_released_truncation_and_clamp_and_the_unclamped_options():
    torch.manual_seed(0)
    d = _wide_priors().draw(20000)  # defaults: the release
    assert d.z.abs().max().item() == 2.0  # truncated (clipped) at 2 sigma
    assert bool(((d.wh >= 0.002) & (d.wh <= 0.7)).all())
    assert bool(((d.boxes >= 0) & (d.boxes <= 1)).all())  # clamped to the image
    unclamped = torch.cat([d.centres - d.wh / 2, d.centres + d.wh / 2], 1)
    assert ((unclamped < 0) | (unclamped > 1)).any(1).float().mean() > 0.3
    torch.testing.assert_close(d.boxes, unclamped.clamp(0, 1))
    torch.manual_seed(0)
    old = _wide_priors(size_clip_sigma=None, clamp_to_image=False).draw(20000)
    assert old.z.abs().max().item() > 3.0  # untruncated Gaussian
    assert ((old.boxes < 0) | (old.boxes > 1)).any(1).float().mean() > 0.3
    torch.testing.assert_close(old.boxes, torch.cat([old.centres - old.wh / 2,
                                                     old.centres + old.wh / 2], 1))
    with pytest.raises(ValueError, match='size_clip_sigma'):
        InstancePriors(2, size_clip_sigma=0)


def test_scale_bin_sizes_per_image_and_released_last_image():
    priors = InstancePriors(3)
    gt = [torch.tensor([[10., 20., 50., 60.]]), torch.tensor([[0., 0., 40., 20.]])]
    labels = [torch.tensor([1]), torch.tensor([2])]
    shapes = [(100, 200), (80, 80)]  # (h, w)
    own = build_instances(gt, labels, shapes, priors, 0, 1, scale_bins='per_image')
    last = build_instances(gt, labels, shapes, priors, 0, 1, scale_bins='last_image')
    torch.testing.assert_close(own.wh_px[:, 0], torch.tensor([[40., 40.], [40., 20.]]))
    # the release scales image 0's normalised box (0.2 x 0.4) by image 1's 80 x 80
    torch.testing.assert_close(last.wh_px[:, 0], torch.tensor([[16., 32.], [40., 20.]]))
    with pytest.raises(ValueError, match="scale_bins='own' is not valid; choose one of "
                                         "'per_image', 'last_image'"):
        build_instances(gt, labels, shapes, priors, scale_bins='own')
    with pytest.raises(ValueError, match="'per_image', 'last_image'"):
        InstanceConditionalDistillLoss(scale_bins='last')
    with pytest.raises(ValueError, match='fake_size_clip_sigma'):
        InstanceConditionalDistillLoss(fake_size_clip_sigma=-1)


def test_loss_passes_the_fake_sampling_options_to_its_priors():
    loss = InstanceConditionalDistillLoss(num_classes=3, student_channels=8, teacher_channels=8,
                                          embed_dims=8, num_heads=2, ffn_dims=16,
                                          num_pos_feats=4, fake_size_clip_sigma=None,
                                          fake_box_clamp=False)
    loss.setup(torch.nn.Module(), torch.nn.Module())
    assert loss.priors.size_clip_sigma is None and not loss.priors.clamp_to_image
    default = InstanceConditionalDistillLoss(num_classes=3, student_channels=8,
                                             teacher_channels=8, embed_dims=8, num_heads=2,
                                             ffn_dims=16, num_pos_feats=4)
    default.setup(torch.nn.Module(), torch.nn.Module())
    assert default.priors.size_clip_sigma == 2.0 and default.priors.clamp_to_image


@pytest.mark.parametrize('token_channels', [16, 24])
def test_decoder_input_projection_is_xavier_with_zero_bias(token_channels):
    torch.manual_seed(0)
    e = 16
    dec = InstanceDecoder(token_channels, embed_dims=e, num_heads=2, ffn_dims=32, pos_dims=16)
    for proj in (dec.q_proj, dec.k_proj, dec.v_proj):
        assert not proj.bias.any()
        fan_in = proj.weight.shape[1]
        # one stacked (3E, E) in-projection when the widths agree, else each on its own
        bound = math.sqrt(6 / (e + 3 * e)) if token_channels == e else math.sqrt(6 / (e + fan_in))
        assert proj.weight.abs().max().item() <= bound
        assert proj.weight.abs().max().item() > 0.9 * bound
    assert dec.out_proj.bias.any()  # untouched: PyTorch's default init


def test_icd_configs_clip_student_gradients_by_value():
    from mmengine.optim import build_optim_wrapper
    cfg, model = _model()
    wrappers = build_optim_wrapper(model, cfg.optim_wrapper)
    student = wrappers['student']
    assert student.clip_func is torch.nn.utils.clip_grad_value_
    assert student.clip_grad_kwargs == dict(clip_value=1.0)
    assert wrappers['distill'].clip_grad_kwargs == dict(max_norm=0.01)
