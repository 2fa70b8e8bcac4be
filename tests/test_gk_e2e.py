"""Global Knowledge end to end on the tiny synthetic data: PGMHook, both modes, resume."""
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.runner import Runner

from conftest import REPO, apply_data_options, data_options, run_tool
from mmkd.models.methods.global_knowledge import PGMHook, pgm_population
from mmkd.models.utils import MethodRecorder
from mmkd.utils.torch_compat import safe_torch_load

GK_CFG = 'configs/synthetic/kd_pgm_r34w32_r18w16_12e_synthetic.py'


def gk_args(work_dir, data, teacher_ckpt, mode, epochs=2, extra=()):
    return ['tools/train.py', GK_CFG, '--work-dir', str(work_dir), '--cfg-options',
            *data_options(data), f'model.teacher_ckpt={teacher_ckpt}',
            f'model.distill_losses.loss_gk.pgm.mode={mode}',
            'model.distill_losses.loss_gk.pgm.min_size=4',
            'model.distill_losses.loss_gk.pgm.max_samples=50',
            f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}',
            'default_hooks.checkpoint.interval=1', 'default_hooks.checkpoint.max_keep_ckpts=5',
            'default_hooks.logger.interval=1', 'param_scheduler.0.end=4', *extra]


def _state(path):
    return safe_torch_load(path)['state_dict']


def test_pgm_hook_collects_descriptors_and_caches_teacher(tmp_path, synthetic_data,
                                                          teacher_ckpt):
    cfg = apply_data_options(Config.fromfile(osp.join(REPO, GK_CFG)), synthetic_data)
    cfg.model.teacher_ckpt = teacher_ckpt
    cfg.model.distill_losses.loss_gk.pgm.update(min_size=4, max_samples=50)
    cfg.work_dir = str(tmp_path)
    runner = Runner.from_cfg(cfg)
    model = runner.model
    loss = model.distill_losses.loss_gk
    hook = PGMHook(batch_size=4)
    ds, dt, lab = hook.collect(runner, model, loss)
    assert len(ds) == len(dt) == loss.num_levels
    n = lab[0].shape[0]
    assert n > 0 and ds[0].shape == (n, 64) and dt[0].shape == (n, 128)
    assert model.student.training  # the pass restores the student's mode
    with MethodRecorder(model.teacher, 'extract_feat') as rec:
        ds2, dt2, _ = hook.collect(runner, model, loss)
    assert not rec.calls, 'teacher descriptors must come from the cache on later passes'
    assert all(torch.equal(a, b) for a, b in zip(dt, dt2))
    assert all(torch.equal(a, b) for a, b in zip(ds, ds2))  # same student, same descriptors
    loss.generate_prototypes(ds, dt, lab)
    assert loss.pgm.ready


def test_pgm_population_is_per_class_and_the_pass_logs_progress(tmp_path, synthetic_data,
                                                                teacher_ckpt):
    """Per class c: up to max_samples images holding c, and only their class-c boxes."""
    import logging
    cfg = apply_data_options(Config.fromfile(osp.join(REPO, GK_CFG)), synthetic_data)
    cfg.model.teacher_ckpt = teacher_ckpt
    cfg.model.distill_losses.loss_gk.pgm.update(min_size=4, max_samples=2)
    cfg.work_dir = str(tmp_path)
    runner = Runner.from_cfg(cfg)
    loss = runner.model.distill_losses.loss_gk
    dataset = runner.train_dataloader.dataset
    pop = pgm_population(dataset, loss.num_classes, 4, 2, seed=1)
    want = torch.zeros(loss.num_classes, dtype=torch.long)
    in_union = 0
    for i in range(len(dataset)):
        for inst in dataset.get_data_info(i)['instances']:
            x1, y1, x2, y2 = inst['bbox']
            big = x2 - x1 > 4 and y2 - y1 > 4
            if i in pop and big:
                in_union += 1
                if inst['bbox_label'] in pop[i]:
                    want[inst['bbox_label']] += 1
    assert all(len([i for i in pop if c in pop[i]]) <= 2 for c in range(loss.num_classes))
    assert 0 < int(want.sum()) < in_union  # the old rule pooled every box of the drawn images
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    runner.logger.addHandler(handler)
    try:
        _, _, lab = PGMHook(batch_size=2, log_interval=1).collect(runner, runner.model, loss)
    finally:
        runner.logger.removeHandler(handler)
    assert torch.equal(torch.bincount(lab[0], minlength=loss.num_classes), want)
    lines = [r.getMessage() for r in records if 'ETA' in r.getMessage()]
    assert lines and lines[0].startswith(f'PGM epoch 0: 2/{len(pop)} images')


def test_offline_mode_trains_with_prototypes_every_epoch(tmp_path, synthetic_data,
                                                         teacher_ckpt):
    proc = run_tool(gk_args(tmp_path, synthetic_data, teacher_ckpt, 'offline'))
    log = proc.stdout + proc.stderr
    assert 'PGM: prototypes for epoch 0' in log and 'PGM: prototypes for epoch 1' in log
    for key in ('loss_gk_fg', 'loss_gk_bg', 'loss_gk_soft', 'gk_r_mean'):
        assert key in log
    state = _state(tmp_path / 'epoch_2.pth')
    assert int(state['distill_losses.loss_gk.pgm.num_generated']) == 2
    assert state['distill_losses.loss_gk.pgm.proto_valid'].any()
    twin = safe_torch_load(tmp_path / 'epoch_2_student.pth')['state_dict']
    assert not any('pgm' in k or 'adapters' in k for k in twin)


def test_online_mode_resume_restores_bank_and_prototypes(tmp_path, synthetic_data,
                                                         teacher_ckpt):
    a, b = tmp_path / 'a', tmp_path / 'b'
    run_tool(gk_args(a, synthetic_data, teacher_ckpt, 'online', epochs=3))
    first = _state(a / 'epoch_1.pth')
    assert int(first['distill_losses.loss_gk.bank_count'].sum()) > 0
    assert int(first['distill_losses.loss_gk.pgm.num_generated']) == 0  # refreshed at epoch 1
    final_a = _state(a / 'epoch_3.pth')
    assert int(final_a['distill_losses.loss_gk.pgm.num_generated']) == 2
    run_tool(gk_args(b, synthetic_data, teacher_ckpt, 'online', epochs=3)
             + ['--resume', str(a / 'epoch_1.pth')])
    final_b = _state(b / 'epoch_3.pth')
    assert final_a.keys() == final_b.keys()
    bad = [k for k in final_a if not torch.equal(final_a[k], final_b[k])]
    assert not bad, bad[:5]


def test_visualize_pgm_writes_pictures(tmp_path, synthetic_data, teacher_ckpt):
    import cv2
    out = tmp_path / 'vis'
    proc = run_tool(['tools/visualize_pgm.py', GK_CFG, '--num-images', '2', '--out-dir',
                     str(out), '--level', '0', '--cfg-options', *data_options(synthetic_data),
                     f'model.teacher_ckpt={teacher_ckpt}',
                     'model.distill_losses.loss_gk.pgm.min_size=4'])
    pngs = sorted(p for p in proc.stdout.split() if p.endswith('.png'))
    assert len(pngs) == 3 and any('prototypes_level0' in p for p in pngs)
    for p in pngs:
        img = cv2.imread(p)
        assert img is not None and img.shape[0] > 50 and img.std() > 0
    robust = cv2.imread([p for p in pngs if 'robustness' in p][0])
    assert robust.shape[1] == 6 * (robust.shape[1] // 6)  # image + 5 level panels
