"""mmkd on a CUDA device: ``pytest -m gpu`` (tools/gpu_check.sh runs it on a GPU host).

Every ``gpu`` test is skipped, with its reason, where torch sees no CUDA device, so CI passes
on CPU machines. On a GPU they check:
* mmcv's CUDA RoIAlign, NMS and sigmoid focal loss (mmdet uses them on CUDA) against the CPU;
* every shipped synthetic distillation config: one training step in fp32 and one under AMP,
  through the config's own optimiser wrapper (mmengine's AmpOptimWrapper for AMP);
* the same batch and weights give the same losses on the CPU and on CUDA in fp32;
* ICD's two optimisers under AMP; tools/train.py --amp saving and --resume; dist_train.sh on
  NCCL;
* every COCO distillation config (configs/kd) builds and steps once under AMP at a reduced
  size, with random weights (nothing is downloaded).
The tests at the end of the file are not marked ``gpu``: they run the same helpers on the CPU,
and the CPU parts of the GPU tooling, so a broken helper fails in CI and not on the GPU host.
"""
import copy
import glob
import math
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.optim import OptimWrapperDict, build_optim_wrapper

from conftest import KD_CFG, REPO, data_options, run_tool
from mmkd.apis import enable_amp, is_distill
from mmkd.benchmark.speed import (CocoSpeedResult, coco_methods, coco_speed_section,
                                  coco_speed_table, seed_random_prototypes, set_train_progress,
                                  strip_pretrained, tensor_bytes)
from mmkd.models.detectors.distill_detector import num_classes_of

CUDA = torch.cuda.is_available()
_needs_cuda = pytest.mark.skipif(not CUDA, reason='needs a CUDA device: run pytest -m gpu on a '
                                 'GPU host (tools/gpu_check.sh)')


def gpu(fn):
    """Mark a test ``gpu`` and skip it without CUDA."""
    return pytest.mark.gpu(_needs_cuda(fn))


SYNTHETIC_KD = sorted(glob.glob(osp.join(REPO, 'configs', 'synthetic', 'kd_*.py')))
ICD_CFG = osp.join(REPO, 'configs', 'synthetic', 'kd_icd_r34w32_r18w16_12e_synthetic.py')
PGM_CFG = osp.join(REPO, 'configs', 'synthetic', 'kd_pgm_r34w32_r18w16_12e_synthetic.py')


def _looks_distill(path: str, depth: int = 0) -> bool:
    """Cheap, at collection (no config is parsed): the file names a DistillDetector, inherits
    a teacher/student pair, or inherits a local config that does. Each test then checks that
    the loaded config really is one; test_coco_config_list_matches_is_distill checks the list."""
    with open(path) as f:
        text = f.read()
    if 'DistillDetector' in text or '_base_/pairs/' in text:
        return True
    base = re.search(r'^_base_\s*=\s*(\[[^\]]*\]|.*)$', text, re.M)
    for ref in re.findall(r"""['"]([^'"]+\.py)['"]""", base.group(1) if base else ''):
        local = osp.normpath(osp.join(osp.dirname(path), ref))
        if '::' not in ref and depth < 8 and osp.isfile(local) and _looks_distill(local,
                                                                                   depth + 1):
            return True
    return False


COCO_KD = sorted(p for p in glob.glob(osp.join(REPO, 'configs', 'kd', '*.py'))
                 if _looks_distill(p))
#: Methods that draw random numbers on the device of their inputs, where the CPU and CUDA
#: generators give different draws: MGD's random feature masks and ICD's fake instances
#: sampled from its priors. Their distillation losses cannot match across devices; the
#: student's detection losses still must.
DEVICE_RANDOM = ('_mgd_', '_icd_')


def rel(path: str) -> str:
    return osp.relpath(path, REPO)


# ---- helpers (the CPU tests at the end run them too) ----------------------------------------
def load_cfg(path: str, amp: bool = False) -> Config:
    """The config with random weights (nothing downloaded), AMP if asked, and the training
    clock past every warm-up (ICD's bypass, the LR warm-up)."""
    register_all_modules()
    cfg = Config.fromfile(path)
    assert is_distill(cfg), f'{rel(path)} is not a DistillDetector config'
    strip_pretrained(cfg)
    if amp:
        enable_amp(cfg)
    set_train_progress(cfg)  # iteration 20000: past ICD's bypass (at most 1000 in the configs)
    return cfg


def build(cfg: Config, device: str):
    """The DistillDetector of ``cfg`` on ``device``, in training mode, GK prototypes seeded."""
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).to(device)
    seed_random_prototypes(model)
    return model.train()


def batch_for(model, path: str, size: int = 128, seed: int = 0) -> dict:
    """Two images with 3 and 1 random boxes (and masks for instance segmentation), in the
    packed form ``train_step`` takes; SSD configs get their fixed input size."""
    name = osp.basename(path)
    shapes = [[3, size, size], [3, size * 3 // 4, size]]
    if 'ssd300' in name:
        shapes = [[3, 300, 300]] * 2
    elif 'ssd160' in name:
        shapes = [[3, 160, 160]] * 2
    student = model.student
    with_mask = hasattr(student, 'mask_head') or getattr(
        getattr(student, 'roi_head', None), 'with_mask', False)
    torch.manual_seed(seed)
    return demo_mm_inputs(2, shapes, num_items=[3, 1], num_classes=num_classes_of(student) or 80,
                          with_mask=bool(with_mask), use_box_type=False)


def wrappers_of(optim) -> list:
    return list(optim.values()) if isinstance(optim, OptimWrapperDict) else [optim]


def one_step(model, cfg: Config, batch: dict, optim=None) -> dict:
    """One ``train_step`` through the config's own optimiser wrapper(s). Checks that the
    teacher stays frozen, in eval mode and on the model's device, that every weight stays
    fp32 and every logged loss finite; returns the log vars, the wrapper(s), whether the
    student's weights changed and whether a loss scaler skipped the update (fp16 overflow)."""
    device = next(model.student.parameters()).device
    optim = optim or build_optim_wrapper(model, cfg.optim_wrapper)
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    student_before = [p.detach().clone() for p in model.student.parameters()]
    amp = [w for w in wrappers_of(optim) if hasattr(w, 'loss_scaler')]
    scales = [w.loss_scaler.get_scale() for w in amp]
    log_vars = model.train_step(batch, optim)
    assert not model.teacher.training, 'the teacher left eval mode'
    assert not any(p.requires_grad for p in model.teacher.parameters())
    for k, v in model.teacher.state_dict().items():
        assert v.device == device, f'teacher tensor {k} is on {v.device}, the model on {device}'
        assert torch.equal(v, teacher_before[k]), f'teacher tensor {k} changed in a step'
    assert all(p.dtype == torch.float32 for p in model.parameters()), 'a weight is not fp32'
    log_vars = {k: float(torch.as_tensor(v).detach()) for k, v in log_vars.items()}
    bad = {k: v for k, v in log_vars.items() if not math.isfinite(v)}
    assert not bad, f'non-finite losses: {bad}'
    changed = any(not torch.equal(p.detach(), b)
                  for p, b in zip(model.student.parameters(), student_before))
    skipped = any(w.loss_scaler.get_scale() < s for w, s in zip(amp, scales))
    return dict(log_vars=log_vars, optim=optim, student_changed=changed, scaler_skipped=skipped)


def student_loss_keys(model, batch: dict) -> set:
    """Names of the student's own detection losses on ``batch`` (everything else a
    DistillDetector logs comes from its distillation losses)."""
    data = model.data_preprocessor(copy.deepcopy(batch), True)
    with torch.no_grad():
        return set(model.student.loss(data['inputs'], data['data_samples']))


def distill_keys(model, batch: dict, log_vars: dict) -> list:
    """The logged keys that come from the distillation losses."""
    return sorted(set(log_vars) - student_loss_keys(model, batch) - {'loss'})


def loss_values(model, batch: dict, seed: int = 1) -> dict:
    """The logged value of every loss of one forward (no update), RNG seeded first."""
    data = model.data_preprocessor(copy.deepcopy(batch), True)
    torch.manual_seed(seed)
    with torch.no_grad():
        _, log_vars = model.parse_losses(model(**data, mode='loss'))
    return {k: float(v) for k, v in log_vars.items()}


def keep_every_proposal(detector) -> None:
    """Make a two-stage student's RoIs independent of float rounding: no top-k before the
    RPN's NMS and an NMS that suppresses nothing (IoU > 1 never holds), every proposal kept,
    and an R-CNN sampler that takes every positive and negative RoI. Which RoIs the R-CNN
    sees then depends only on the anchors and the GT, not on near-equal random-init scores,
    whose order may differ between the CPU and CUDA. (The RPN's own sampler draws from the
    CPU generator on either device, so seeding makes it the same.)"""
    if not getattr(detector, 'with_rpn', False):
        return
    prop = detector.train_cfg.rpn_proposal
    prop.nms_pre = -1
    prop.max_per_img = 10 ** 6
    prop.nms.iou_threshold = 1.0
    detector.roi_head.bbox_sampler.num = 10 ** 6


# ---- mmcv's CUDA ops -----------------------------------------------------------------------
@gpu
@pytest.mark.parametrize('aligned,ratio', [(True, 2), (True, 0), (False, 2)])
def test_mmcv_roi_align_cuda_matches_cpu(aligned, ratio):
    """Forward and input gradient of RoIAlign. Both sample the same bilinear points; fp32
    rounding and the order of CUDA's atomicAdd accumulation differ: 1e-5 absolute on values
    of order 1."""
    from mmcv.ops import RoIAlign
    g = torch.Generator().manual_seed(0)
    feat = torch.rand(2, 16, 24, 32, generator=g)
    xy = torch.rand(40, 2, generator=g) * torch.tensor([100., 70.])
    wh = torch.rand(40, 2, generator=g) * 60 + 1
    rois = torch.cat([torch.randint(0, 2, (40, 1), generator=g).float(), xy, xy + wh], 1)
    op = RoIAlign((7, 7), spatial_scale=0.25, sampling_ratio=ratio, aligned=aligned)
    weight = torch.rand(40, 16, 7, 7, generator=g)
    outs, grads = [], []
    for dev in ('cpu', 'cuda'):
        f = feat.to(dev).requires_grad_(True)
        out = op(f, rois.to(dev))
        (out * weight.to(dev)).sum().backward()
        outs.append(out.detach().cpu())
        grads.append(f.grad.cpu())
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=1e-5)


@gpu
def test_mmcv_nms_and_batched_nms_cuda_match_cpu():
    """Distinct scores and boxes away from the IoU threshold: the kept indices are exact."""
    from mmcv.ops import batched_nms, nms
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * 200
    boxes = torch.cat([xy, xy + torch.rand(300, 2, generator=g) * 50 + 5], 1)
    scores = torch.randperm(300, generator=g).float() / 300
    idxs = torch.randint(0, 5, (300, ), generator=g)
    keep = {d: nms(boxes.to(d), scores.to(d), 0.5)[1].cpu() for d in ('cpu', 'cuda')}
    assert torch.equal(keep['cpu'], keep['cuda']) and 0 < len(keep['cpu']) < 300
    cfg = dict(type='nms', iou_threshold=0.6)
    res = {d: batched_nms(boxes.to(d), scores.to(d), idxs.to(d), cfg) for d in ('cpu', 'cuda')}
    assert torch.equal(res['cpu'][1], res['cuda'][1].cpu())
    torch.testing.assert_close(res['cuda'][0].cpu(), res['cpu'][0])


@gpu
def test_mmcv_sigmoid_focal_loss_cuda_matches_mmdet_python_version():
    """mmdet's FocalLoss calls mmcv's CUDA kernel on CUDA tensors and its Python version
    elsewhere: the two agree, value and gradient (fp32 reduction order: 1e-5 relative)."""
    from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss, sigmoid_focal_loss
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 80, generator=g) * 3
    target = torch.randint(0, 81, (500, ), generator=g)  # 80 = background
    onehot = torch.nn.functional.one_hot(target, 81)[:, :80].float()
    x_cuda = logits.cuda().requires_grad_(True)
    cuda = sigmoid_focal_loss(x_cuda, target.cuda(), gamma=2.0, alpha=0.25, reduction='sum')
    cuda.backward()
    x_ref = logits.clone().requires_grad_(True)
    ref = py_sigmoid_focal_loss(x_ref, onehot, gamma=2.0, alpha=0.25, reduction='sum')
    ref.backward()
    torch.testing.assert_close(cuda.cpu(), ref.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x_cuda.grad.cpu(), x_ref.grad, rtol=1e-5, atol=1e-6)


# ---- the benchmark's CUDA measurements --------------------------------------------------------
@gpu
def test_tensor_bytes_counts_weights_grads_and_optimizer_state():
    """Linear(256, 256): 65792 fp32 values = 263168 bytes; its gradients and SGD momentum
    buffers add the same again each; CPU tensors are not counted."""
    lin = torch.nn.Linear(256, 256).cuda()
    opt = torch.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9)
    assert tensor_bytes(lin, opt) == 263168
    lin(torch.randn(4, 256, device='cuda')).sum().backward()
    assert tensor_bytes(lin, opt) == 2 * 263168
    opt.step()
    assert tensor_bytes(lin, opt) == 3 * 263168
    assert tensor_bytes(torch.nn.Linear(256, 256)) == 0


class _Outer(torch.nn.Module):
    """Calls its ``inner`` layer 20 times per forward, interleaved with its own layer."""

    def __init__(self, width: int):
        super().__init__()
        self.inner = torch.nn.Linear(width, width)
        self.own = torch.nn.Linear(width, width)

    def forward(self, x):
        for _ in range(20):
            x = self.own(self.inner(x))
        return x


def _timer_invariant(device: str, width: int, events: bool) -> None:
    """Three timers on the same calls: the outer module, the inner module it calls, and the
    outer one minus the inner one. The subtracted total equals the difference of the other
    two, up to the time between neighbouring hooks."""
    from mmkd.benchmark.speed import CallTimer
    m = _Outer(width).to(device)
    full = CallTimer([m], events=events)
    inner = CallTimer([m.inner], events=events)
    sub = CallTimer([m], inner=inner, events=events)
    with torch.no_grad():
        for _ in range(2):
            m(torch.randn(width, width, device=device))
    if events:
        torch.cuda.synchronize()
        assert len(full._spans) == 2 and len(inner._spans) == 40  # outermost calls only
    assert 0 < inner.total < full.total
    assert sub.total == pytest.approx(full.total - inner.total, rel=0.05, abs=5e-4)
    sub.reset()
    assert sub.total == 0.0


@gpu
def test_call_timer_with_cuda_events_subtracts_the_inner_calls():
    _timer_invariant('cuda', 2048, events=True)


# ---- every synthetic distillation config: one step in fp32 and under AMP --------------------
@gpu
@pytest.mark.parametrize('amp', [False, True], ids=['fp32', 'amp'])
@pytest.mark.parametrize('path', SYNTHETIC_KD, ids=rel)
def test_synthetic_config_trains_a_step_on_cuda(path, amp):
    cfg = load_cfg(path, amp)
    model = build(cfg, 'cuda')
    batch = batch_for(model, path)
    out = one_step(model, cfg, batch)
    assert distill_keys(model, batch, out['log_vars']), 'no distillation loss was logged'
    if amp:
        assert all(type(w).__name__ == 'AmpOptimWrapper' for w in wrappers_of(out['optim']))
    # a dynamic loss scaler may skip the very first update on an fp16 overflow; fp32 never does
    assert out['student_changed'] or (amp and out['scaler_skipped'])


# ---- the same losses on the CPU and on CUDA (fp32) ------------------------------------------
@gpu
@pytest.mark.parametrize('path', SYNTHETIC_KD, ids=rel)
def test_cpu_and_cuda_fp32_give_the_same_losses(path):
    """Same weights (one model, copied), same batch, same seed; TF32 off so CUDA computes in
    true fp32. Tolerance: 5e-4 relative plus 1e-5 absolute per logged loss. The two devices
    use different convolution/matmul algorithms and summation orders, so features differ by
    ~1e-6 relative per layer and the losses by ~1e-5 after these 20-40-layer networks; 5e-4
    leaves a margin and still catches a wrong kernel or an accidental fp16 (~1e-3).
    The RoIs are made independent of rounding (keep_every_proposal); for methods that draw
    random numbers on the device (DEVICE_RANDOM) only the student's losses are compared."""
    cfg = load_cfg(path)
    model = build(cfg, 'cpu')
    keep_every_proposal(model.student)
    batch = batch_for(model, path, size=96)
    student_keys = student_loss_keys(copy.deepcopy(model), batch)
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        cpu = loss_values(copy.deepcopy(model), batch)
        cuda = loss_values(copy.deepcopy(model).cuda(), batch)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    assert cpu.keys() == cuda.keys()
    random = any(t in osp.basename(path) for t in DEVICE_RANDOM)
    compared = [k for k in cpu if k != 'loss' and (not random or k in student_keys)]
    assert set(cpu) - student_keys - {'loss'}, 'no distillation loss was logged'
    diff = {k: (cpu[k], cuda[k]) for k in compared
            if abs(cpu[k] - cuda[k]) > 5e-4 * abs(cpu[k]) + 1e-5}
    assert not diff, f'CPU vs CUDA (cpu, cuda): {diff}'
    assert all(math.isfinite(v) for v in cuda.values())


# ---- ICD: two optimisers under AMP ----------------------------------------------------------
@gpu
def test_icd_two_optimisers_step_under_amp():
    """Each optimiser has its own AmpOptimWrapper and loss scaler; within a few steps both
    apply real updates (a scaler may skip a step on an fp16 overflow and then lower its
    scale), the teacher never moves."""
    cfg = load_cfg(ICD_CFG, amp=True)
    model = build(cfg, 'cuda')
    batch = batch_for(model, ICD_CFG)
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    assert isinstance(optim, OptimWrapperDict) and set(optim.keys()) == {'student', 'distill'}
    assert all(type(w).__name__ == 'AmpOptimWrapper' for w in optim.values())
    assert optim['student'].loss_scaler is not optim['distill'].loss_scaler
    distill_before = [p.detach().clone() for p in model.distill_losses.parameters()]
    for _ in range(6):
        out = one_step(model, cfg, batch, optim)
    assert any(k.startswith('loss_icd') for k in out['log_vars']), out['log_vars']
    adam_steps = [int(s['step']) for s in optim['distill'].optimizer.state.values()]
    assert adam_steps and max(adam_steps) >= 1, 'the distill AdamW never stepped in 6 steps'
    sgd = optim['student'].optimizer.state.values()
    assert any('momentum_buffer' in s for s in sgd), 'the student SGD never stepped in 6 steps'
    assert any(not torch.equal(p.detach(), b)
               for p, b in zip(model.distill_losses.parameters(), distill_before))


# ---- tools/train.py --amp on CUDA: save and --resume ----------------------------------------
def _train_args(work, data, teacher_ckpt, epochs, extra=()):
    return ['tools/train.py', KD_CFG, '--work-dir', str(work), '--amp', '--cfg-options',
            *data_options(data), f'model.teacher_ckpt={teacher_ckpt}',
            f'train_cfg.max_epochs={epochs}', 'train_cfg.val_interval=100',
            'default_hooks.checkpoint.interval=1', 'default_hooks.logger.interval=1',
            'param_scheduler.0.end=4', *extra]


@gpu
def test_train_amp_saves_and_resumes_on_cuda(tmp_path, synthetic_data, teacher_ckpt):
    """12 images, 3 per batch: 4 iterations per epoch. The resumed run starts at epoch 2 with
    the saved optimiser and loss-scaler state, and its checkpoint loads strictly on CUDA."""
    from mmkd.utils.checkpoint import load_checkpoint_file
    run_tool(_train_args(tmp_path, synthetic_data, teacher_ckpt, 1))
    first = load_checkpoint_file(str(tmp_path / 'epoch_1.pth'))
    assert 'loss_scaler' in first['optimizer'], 'AMP checkpoint without the loss scaler state'
    proc = run_tool(_train_args(tmp_path, synthetic_data, teacher_ckpt, 2) + ['--resume'])
    log = proc.stdout + proc.stderr
    assert 'resumed epoch: 1, iter: 4' in log, log[-3000:]
    assert 'Epoch(train) [1]' not in log and 'Epoch(train) [2][4/4]' in log, log[-3000:]
    ckpt = load_checkpoint_file(str(tmp_path / 'epoch_2.pth'), map_location='cuda')
    assert ckpt['meta']['iter'] == 8 and ckpt['meta']['epoch'] == 2
    assert 'loss_scaler' in ckpt['optimizer']
    cfg = load_cfg(osp.join(REPO, KD_CFG))
    model = build(cfg, 'cuda')
    model.load_state_dict(ckpt['state_dict'], strict=True)
    assert osp.isfile(tmp_path / 'epoch_2_student.pth')


# ---- tools/dist_train.sh on NCCL ------------------------------------------------------------
@gpu
def test_dist_train_one_process_on_nccl(tmp_path, synthetic_data, teacher_ckpt):
    args = _train_args(tmp_path, synthetic_data, teacher_ckpt, 1)[1:]
    args.remove('--amp')
    # no PORT: the launcher binds a free port itself (torchrun --standalone), no race
    proc = run_tool(['bash', 'tools/dist_train.sh', args[0], '1', *args[1:]],
                    env=dict(PYTHON=sys.executable, NCCL_DEBUG='INFO'))
    log = proc.stdout + proc.stderr
    assert 'Distributed training: True' in log, log[-3000:]
    # the config asks for NCCL, mmkd's CPU fallback to gloo stayed off, and NCCL itself ran
    # (NCCL_DEBUG=INFO: it logs when DDP's first collective creates its communicator)
    assert "backend='nccl'" in log and 'gloo backend' not in log, log[-3000:]
    assert 'NCCL INFO' in log, log[-3000:]
    assert 'Epoch(train) [1][4/4]' in log, log[-3000:]
    assert osp.isfile(tmp_path / 'epoch_1.pth') and osp.isfile(tmp_path / 'epoch_1_student.pth')


# ---- COCO configs: build on CUDA, one AMP step at a reduced size ----------------------------
@gpu
@pytest.mark.parametrize('path', COCO_KD, ids=rel)
def test_coco_config_builds_and_steps_on_cuda_under_amp(path):
    """Random weights (teacher_ckpt / student_ckpt / Pretrained init_cfg dropped), 2 images of
    at most 320 px (SSD300: 300), GK prototypes seeded for the 80 classes."""
    cfg = load_cfg(path, amp=True)
    model = build(cfg, 'cuda')
    assert tensor_bytes(model.teacher) > 0, 'the teacher is not on the GPU'
    batch = batch_for(model, path, size=320)
    out = one_step(model, cfg, batch)
    assert distill_keys(model, batch, out['log_vars']), out['log_vars']


# ---- on the CPU: the helpers above and the CPU parts of the GPU tooling ---------------------
def test_helpers_step_the_pgm_config_on_the_cpu():
    """The GPU tests' helpers on the CPU (fp32): config loading with random weights, seeded
    prototypes, one step through the config's optimiser, the frozen-teacher checks."""
    cfg = load_cfg(PGM_CFG)
    model = build(cfg, 'cpu')
    (loss, ) = [l for l in model.distill_losses.values() if hasattr(l, 'pgm')]
    assert loss.pgm.ready and bool(loss.pgm.proto_valid.all())
    batch = batch_for(model, PGM_CFG)
    out = one_step(model, cfg, batch)
    assert out['student_changed'] and not out['scaler_skipped']
    keys = distill_keys(model, batch, out['log_vars'])
    assert keys and all(k.startswith('loss_gk') for k in keys), keys


def test_call_timer_wall_clock_subtracts_the_inner_calls():
    _timer_invariant('cpu', 512, events=False)


def test_keep_every_proposal_makes_the_rois_seed_independent():
    """With every proposal kept and every RoI sampled, two forwards with different seeds see
    the same R-CNN RoIs, so the R-CNN losses agree (the RPN's own sampling still draws)."""
    cfg = load_cfg(osp.join(REPO, KD_CFG))
    model = build(cfg, 'cpu')
    keep_every_proposal(model.student)
    batch = batch_for(model, KD_CFG, size=64)
    a, b = loss_values(model, batch, seed=1), loss_values(model, batch, seed=2)
    for k in ('loss_cls', 'acc'):
        assert a[k] == pytest.approx(b[k], rel=1e-6), (k, a[k], b[k])


def test_coco_config_list_matches_is_distill():
    """The cheap collection-time list is exactly the configs/kd files whose loaded config is a
    DistillDetector."""
    register_all_modules()
    exact = [p for p in sorted(glob.glob(osp.join(REPO, 'configs', 'kd', '*.py')))
             if is_distill(Config.fromfile(p))]
    assert [rel(p) for p in COCO_KD] == [rel(p) for p in exact]
    assert 'configs/kd/faster_rcnn_r101_r50_pgm.py' in map(rel, COCO_KD)
    assert len(SYNTHETIC_KD) >= 10


def test_strip_pretrained_drops_every_download():
    cfg = Config.fromfile(osp.join(REPO, 'configs/kd/faster_rcnn_r101_r50_pgm.py'))
    cfg.model.student_ckpt = 'x.pth'
    assert cfg.model.student.backbone.init_cfg.type == 'Pretrained'
    strip_pretrained(cfg)
    assert cfg.model.teacher_ckpt is None and cfg.model.student_ckpt is None
    assert cfg.model.student.backbone.init_cfg is None


def test_coco_methods_of_each_pair():
    frcnn = [m for m, *_ in coco_methods('faster_rcnn')]
    retina = [m for m, *_ in coco_methods('retinanet')]
    assert {'pgm', 'pgm_online', 'icd', 'dsig', 'feat_kl', 'cwd', 'fgd', 'mgd', 'pkd',
            'gid_mmkd_two_stage'} <= set(frcnn)
    assert 'dsig' not in retina and {'pgm', 'pgm_online', 'icd'} <= set(retina)
    online = dict((m, o) for m, _, o in coco_methods('retinanet'))['pgm_online']
    assert online == ('model.distill_losses.loss_gk.pgm.mode=online', )
    assert not any(m.startswith('pgm_') and m != 'pgm_online' for m in frcnn)  # variants
    with pytest.raises(ValueError, match='unknown method'):
        coco_methods('retinanet', ['dsig'])
    with pytest.raises(ValueError, match='unknown pair'):
        coco_methods('yolo')


def test_coco_speed_measures_on_the_cpu_with_wall_clock_timers():
    """measure_coco_method with ``device='cpu'`` (the same interleaved loop as the GPU run, with
    wall-clock timers and no memory): one tiny timed step per model, every part measured.
    Structure only: speed is never asserted."""
    from mmkd.benchmark.speed import measure_coco_method
    (config, options), = [(c, o) for m, c, o in coco_methods('retinanet', ['pkd'])]
    r = measure_coco_method('retinanet', 'pkd', config, options, iters=1, warmup=0,
                            amp=False, size=(64, 96), num_images=1, device='cpu')
    assert not r.error and r.precision == 'fp32'
    assert r.plain_ms > 0 and r.distilled_ms > 0 and r.teacher_ms > 0 and r.losses_ms >= 0
    assert math.isfinite(r.overhead)
    assert r.plain_mem_mib is None and math.isnan(r.teacher_weights_mib)  # CUDA only
    assert r.targets()['memory'] is None


def test_coco_targets_and_report_from_hand_values():
    """Plain 100 ms; teacher forward 30 ms. GK at 160 ms misses 1.5x; 48 % beyond the teacher
    misses 10 %; 1500 MiB > 1000 * 1.15 + 200 = 1350 MiB misses memory."""
    ok = CocoSpeedResult('faster_rcnn', 'pkd', 'c.py', plain_ms=100.0, distilled_ms=138.0,
                         teacher_ms=30.0, overhead=0.08, plain_mem_mib=1000.0,
                         distilled_mem_mib=1300.0, teacher_weights_mib=200.0)
    assert ok.targets() == {'overhead': True, 'memory': True} and not ok.missed
    assert ok.mem_limit_mib == pytest.approx(1350.0)
    gk = CocoSpeedResult('retinanet', 'pgm', 'c.py', plain_ms=100.0, distilled_ms=160.0,
                         teacher_ms=30.0, overhead=0.30, plain_mem_mib=1000.0,
                         distilled_mem_mib=1500.0, teacher_weights_mib=200.0)
    assert gk.missed == ['overhead', 'memory', 'gk_ratio']
    cpu = CocoSpeedResult('retinanet', 'cwd', 'c.py', plain_ms=10.0, distilled_ms=10.5,
                          teacher_ms=0.2, overhead=0.03)
    assert cpu.targets() == {'overhead': True, 'memory': None}
    failed = CocoSpeedResult('retinanet', 'icd', 'c.py', error='failed: RuntimeError: x')
    assert failed.targets() == {} and not failed.missed
    table = coco_speed_table([ok, gk, cpu, failed])
    assert '| Faster R-CNN R101 -> R50 | pkd | 100.0 | 138.0 | 1.38x | 30.0 | 8.0% | ' \
           '1000 / 1300 / 1350 |' in table
    assert 'gk_ratio: **no**' in table and 'memory: n/a' in table and 'failed: Runtime' in table
    body = coco_speed_section([ok, gk], 'python tools/benchmark_speed.py --coco', 'NVIDIA X',
                              (800, 1333), 2, 8, 3, '2026-01-01')
    assert '**NVIDIA X**' in body and '2 images of 1333x800' in body
    assert '- RetinaNet R101 -> R50 pgm: overhead, memory, gk_ratio' in body


def test_apply_patch_applies_once_and_refuses_a_mismatch(tmp_path):
    sys.path.insert(0, osp.join(REPO, 'tools', 'patches'))
    try:
        from apply_patch import main
    finally:
        sys.path.pop(0)
    src = tmp_path / 'tree' / 'pkg'
    src.mkdir(parents=True)
    (src / 'a.txt').write_text('one\ntwo\nthree\nfour\n')
    (src / 'b.txt').write_text('alpha\nbeta\n')
    patch = tmp_path / 'p.patch'
    patch.write_text('a note before the diff\n'
                     '--- a/pkg/a.txt\n+++ b/pkg/a.txt\n@@ -1,4 +1,4 @@\n one\n-two\n+TWO\n'
                     ' three\n four\n'
                     '--- a/pkg/b.txt\n+++ b/pkg/b.txt\n@@ -1,2 +1,3 @@\n alpha\n+inserted\n'
                     ' beta\n')
    tree = str(tmp_path / 'tree')
    assert main([str(patch), tree, '--check']) == 0
    assert (src / 'a.txt').read_text() == 'one\ntwo\nthree\nfour\n'  # --check writes nothing
    assert main([str(patch), tree]) == 0
    assert (src / 'a.txt').read_text() == 'one\nTWO\nthree\nfour\n'
    assert (src / 'b.txt').read_text() == 'alpha\ninserted\nbeta\n'
    assert main([str(patch), tree]) == 0  # already applied: unchanged
    assert (src / 'b.txt').read_text() == 'alpha\ninserted\nbeta\n'
    (src / 'a.txt').write_text('one\ntwo\nthree\nfour\n')
    (src / 'b.txt').write_text('alpha\nGAMMA\n')  # b no longer matches
    assert main([str(patch), tree]) == 1
    assert (src / 'a.txt').read_text() == 'one\ntwo\nthree\nfour\n'  # nothing written


def test_gpu_check_script_parses_and_documents_its_modes():
    out = subprocess.run(['bash', osp.join(REPO, 'tools', 'gpu_check.sh'), '--help'],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    for mode in ('--build-only', '--check', '--tests-only', '--bench-only', '--install-only'):
        assert mode in out.stdout
    bad = subprocess.run(['bash', osp.join(REPO, 'tools', 'gpu_check.sh'), '--nope'],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and 'unknown argument --nope' in bad.stderr
