"""End to end on the tiny synthetic data: tools/train.py, test.py, export, resume, dist_train."""
import copy
import os
import os.path as osp
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.runner import load_checkpoint

from conftest import KD_CFG, REPO, STUDENT_CFG, data_options, run_tool

EPOCHS = 3


def train_args(work_dir, data, teacher_ckpt, extra=()):
    return ['tools/train.py', KD_CFG, '--work-dir', str(work_dir), '--cfg-options',
            *data_options(data), f'model.teacher_ckpt={teacher_ckpt}',
            f'train_cfg.max_epochs={EPOCHS}', f'train_cfg.val_interval={EPOCHS}',
            'default_hooks.checkpoint.interval=1', 'default_hooks.checkpoint.max_keep_ckpts=5',
            'default_hooks.logger.interval=1', 'param_scheduler.0.end=4', *extra]


@pytest.fixture(scope='module')
def kd_run(tmp_path_factory, synthetic_data, teacher_ckpt):
    work = tmp_path_factory.mktemp('kd_run')
    proc = run_tool(train_args(work, synthetic_data, teacher_ckpt))
    return work, proc


def _weights(path):
    return torch.load(path, map_location='cpu', weights_only=True)['state_dict']


def test_train_logs_distill_losses_and_writes_student_twins(kd_run):
    work, proc = kd_run
    log = proc.stdout + proc.stderr
    assert 'loss_kd_fpn' in log and 'loss_kd_roi_kl' in log
    assert 'loaded teacher weights strictly' in log
    for e in range(1, EPOCHS + 1):
        assert osp.isfile(work / f'epoch_{e}.pth')
        assert osp.isfile(work / f'epoch_{e}_student.pth')
    full = _weights(work / f'epoch_{EPOCHS}.pth')
    assert not any(k.startswith('teacher') for k in full)
    assert any(k.startswith('distill_losses.') for k in full)
    twin = torch.load(work / f'epoch_{EPOCHS}_student.pth', weights_only=True)
    assert set(twin) == {'meta', 'state_dict'}
    assert not any(k.startswith(('student.', 'distill_losses.')) for k in twin['state_dict'])
    assert twin['meta']['dataset_meta']['classes'][0] == 'circle'
    for k, v in twin['state_dict'].items():
        assert torch.equal(v, full['student.' + k])


def test_test_tool_prints_coco_map_for_mmkd_and_twin_checkpoints(kd_run, synthetic_data):
    work, _ = kd_run
    opts = ['--cfg-options', *data_options(synthetic_data)]
    a = run_tool(['tools/test.py', KD_CFG, str(work / f'epoch_{EPOCHS}.pth'), '--eval', 'bbox',
                  '--work-dir', str(work / 'test_a'), '--out', str(work / 'preds.pkl'), *opts])
    b = run_tool(['tools/test.py', STUDENT_CFG, str(work / f'epoch_{EPOCHS}_student.pth'),
                  '--eval', 'bbox', '--work-dir', str(work / 'test_b'), *opts])
    maps = []
    for out in (a.stdout, b.stdout):
        m = re.search(r"'coco/bbox_mAP': (-?[0-9.]+)", out)
        assert m, out[-3000:]
        maps.append(float(m.group(1)))
    assert maps[0] == maps[1]
    assert osp.getsize(work / 'preds.pkl') > 0


def test_test_tool_rejects_mismatched_checkpoint(kd_run, synthetic_data, teacher_ckpt):
    work, _ = kd_run
    with pytest.raises(AssertionError, match='does not match'):
        run_tool(['tools/test.py', STUDENT_CFG, teacher_ckpt, '--work-dir', str(work / 't'),
                  '--cfg-options', *data_options(synthetic_data)])


def test_exported_student_loads_in_plain_mmdet_and_predicts_identically(kd_run, tmp_path):
    work, _ = kd_run
    out = tmp_path / 'student.pth'
    proc = run_tool(['tools/export_student.py', str(work / f'epoch_{EPOCHS}.pth'), '--out',
                     str(out), '--config', STUDENT_CFG])
    assert 'verified' in proc.stdout
    register_all_modules()
    cfg = Config.fromfile(osp.join(REPO, STUDENT_CFG))
    plain = MODELS.build(cfg.model)
    load_checkpoint(plain, str(out), strict=True)  # mmengine's own loader, torch defaults
    kd_cfg = Config.fromfile(osp.join(REPO, KD_CFG))
    kd_cfg.model.teacher_ckpt = None
    kd = MODELS.build(kd_cfg.model)
    kd.load_state_dict(_weights(work / f'epoch_{EPOCHS}.pth'))
    from mmdet.testing import demo_mm_inputs
    torch.manual_seed(0)
    packed = demo_mm_inputs(2, [[3, 96, 96], [3, 80, 64]], num_classes=8)
    plain.eval(), kd.eval()
    with torch.no_grad():
        d1 = plain.data_preprocessor(copy.deepcopy(packed), False)
        d2 = kd.data_preprocessor(copy.deepcopy(packed), False)
        p1 = plain(**d1, mode='predict')
        p2 = kd(**d2, mode='predict')
    for x, y in zip(p1, p2):
        assert torch.equal(x.pred_instances.bboxes, y.pred_instances.bboxes)
        assert torch.equal(x.pred_instances.scores, y.pred_instances.scores)


def test_killed_run_resumes_to_identical_weights(kd_run, tmp_path, synthetic_data, teacher_ckpt):
    work_a, _ = kd_run
    work_b = tmp_path / 'killed'
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    proc = subprocess.Popen([sys.executable] + train_args(work_b, synthetic_data, teacher_ckpt),
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    marker = work_b / 'last_checkpoint'
    deadline = time.time() + 300
    while time.time() < deadline:
        if marker.exists() and 'epoch_1.pth' in marker.read_text():
            break
        assert proc.poll() is None, 'training ended before it could be killed'
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # like a node failure: no clean shutdown
    proc.wait()
    assert not (work_b / f'epoch_{EPOCHS}.pth').exists()
    run_tool(train_args(work_b, synthetic_data, teacher_ckpt) + ['--resume'])
    a, b = _weights(work_a / f'epoch_{EPOCHS}.pth'), _weights(work_b / f'epoch_{EPOCHS}.pth')
    assert a.keys() == b.keys()
    diff = {k: (a[k].float() - b[k].float()).abs().max().item() for k in a
            if a[k].is_floating_point()}
    assert all(torch.equal(a[k], b[k]) for k in a), {k: v for k, v in diff.items() if v}


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_dist_train_two_cpu_processes(tmp_path, synthetic_data, teacher_ckpt):
    work = tmp_path / 'dist'
    args = train_args(work, synthetic_data, teacher_ckpt, ['train_cfg.max_epochs=1'])[1:]
    proc = run_tool(['bash', 'tools/dist_train.sh', args[0], '2', *args[1:]],
                    env=dict(PORT=str(_free_port()), PYTHON=sys.executable))
    log = proc.stdout + proc.stderr
    assert 'gloo' in log
    assert osp.isfile(work / 'epoch_1.pth') and osp.isfile(work / 'epoch_1_student.pth')
    assert 'Distributed training: True' in log and 'GPU number: 2' in log, log[-3000:]
    # 12 images, 3 per batch: 4 iterations per epoch alone, 2 per rank when the data is split
    assert 'Epoch(train) [1][2/2]' in log, log[-3000:]


def test_teacher_eval_hook_logs_metrics_and_stops_on_a_bad_teacher(tmp_path, synthetic_data,
                                                                    teacher_ckpt):
    from mmengine.runner import Runner

    from conftest import apply_data_options
    cfg = apply_data_options(Config.fromfile(osp.join(REPO, KD_CFG)), synthetic_data)
    cfg.model.teacher_ckpt = teacher_ckpt  # random weights: mAP ~ 0
    cfg.work_dir = str(tmp_path)
    cfg.custom_hooks = list(cfg.custom_hooks) + [dict(type='TeacherEvalHook', min_score=0.5)]
    runner = Runner.from_cfg(cfg)
    with pytest.raises(RuntimeError, match='below min_score=0.5'):
        runner.train()
    metrics = runner.message_hub.get_info('teacher_metrics')
    assert 'coco/bbox_mAP' in metrics and metrics['coco/bbox_mAP'] < 0.5
    assert runner.iter == 0  # stopped before any training step
