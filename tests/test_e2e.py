"""End to end on the tiny synthetic data: tools/train.py, test.py, export, resume, dist_train."""
import copy
import os
import os.path as osp
import re
import signal
import subprocess
import sys

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.runner import load_checkpoint

from conftest import KD_CFG, REPO, STUDENT_CFG, data_options, run_tool, tool_env
from mmkd.utils.torch_compat import safe_torch_load

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
    return safe_torch_load(path)['state_dict']


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
    twin = safe_torch_load(work / f'epoch_{EPOCHS}_student.pth')
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
    # SIGKILL (like a node failure: no clean shutdown) right after epoch 1 and its checkpoints,
    # by the test-only seam (mmkd/utils/faults.py), not by a timer racing the training
    proc = subprocess.run([sys.executable] + train_args(work_b, synthetic_data, teacher_ckpt),
                          cwd=REPO, env=tool_env({'MMKD_FAULT_AT': 'train_epoch:1'}),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert 'epoch_1.pth' in (work_b / 'last_checkpoint').read_text()
    assert not (work_b / 'epoch_2.pth').exists()
    run_tool(train_args(work_b, synthetic_data, teacher_ckpt) + ['--resume'])
    a, b = _weights(work_a / f'epoch_{EPOCHS}.pth'), _weights(work_b / f'epoch_{EPOCHS}.pth')
    assert a.keys() == b.keys()
    diff = {k: (a[k].float() - b[k].float()).abs().max().item() for k in a
            if a[k].is_floating_point()}
    assert all(torch.equal(a[k], b[k]) for k in a), {k: v for k, v in diff.items() if v}


def test_dist_train_two_cpu_processes(tmp_path, synthetic_data, teacher_ckpt):
    work = tmp_path / 'dist'
    args = train_args(work, synthetic_data, teacher_ckpt, ['train_cfg.max_epochs=1'])[1:]
    # no PORT: the launcher binds a free port itself (torchrun --standalone), no race
    proc = run_tool(['bash', 'tools/dist_train.sh', args[0], '2', *args[1:]],
                    env=dict(PYTHON=sys.executable))
    log = proc.stdout + proc.stderr
    assert 'gloo' in log
    # both ranks tore the process group down before exiting (no abort at interpreter exit)
    assert 'terminate called' not in log and log.count('mmkd: process group closed') == 2, \
        log[-3000:]
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


# ---- user files are never touched; mmkd-written files are written atomically ---------------------
def _snapshot(paths):
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in paths}


def test_twin_hook_touches_only_the_twins_it_wrote(kd_run, tmp_path, synthetic_data,
                                                   teacher_ckpt):
    """The run's own student_ckpt, a twin of another run and a note stay byte- and mtime-exact;
    the hook's own twin of a checkpoint mmengine rotates out (max_keep_ckpts=1) goes, logged."""
    done, _ = kd_run
    work = tmp_path / 'w'
    work.mkdir()
    baseline = work / 'baseline_student.pth'
    baseline.write_bytes((done / 'epoch_3_student.pth').read_bytes())
    foreign = work / 'epoch_1_student.pth'  # a kept twin whose full checkpoint is gone
    foreign.write_bytes((done / 'epoch_2_student.pth').read_bytes())
    notes = work / 'notes.txt'
    notes.write_text('my notes')
    before = _snapshot([baseline, foreign, notes])
    proc = run_tool(train_args(work, synthetic_data, teacher_ckpt,
                               ['default_hooks.checkpoint.max_keep_ckpts=1',
                                f'model.student_ckpt={baseline}']))
    log = proc.stdout + proc.stderr
    assert _snapshot([baseline, foreign, notes]) == before
    assert f'{foreign} exists and was not written by this hook' in log
    assert not (work / 'epoch_2.pth').exists() and not (work / 'epoch_2_student.pth').exists()
    assert f'removed {work / "epoch_2_student.pth"}' in log
    assert (work / f'epoch_{EPOCHS}.pth').exists()
    assert (work / f'epoch_{EPOCHS}_student.pth').exists()
    assert not [n for n in os.listdir(work) if n.endswith('.mmkd-tmp')]


def test_export_tool_refuses_to_replace_a_training_checkpoint(kd_run, tmp_path):
    work, _ = kd_run
    src = work / f'epoch_{EPOCHS}.pth'
    before = _snapshot([src, work / 'epoch_2.pth'])
    proc = run_tool(['tools/export_student.py', str(src), '--out', str(src)], expect_fail=True)
    assert 'is the input checkpoint itself' in proc.stderr
    proc = run_tool(['tools/export_student.py', str(src), '--out', str(work / 'epoch_2.pth')],
                    expect_fail=True)
    assert 'is a training checkpoint' in proc.stderr and '--force' in proc.stderr
    assert _snapshot([src, work / 'epoch_2.pth']) == before


# ---- --resume is strict and checked before training ---------------------------------------------
def test_resume_from_a_student_twin_or_another_config_stops_up_front(kd_run, tmp_path,
                                                                     synthetic_data,
                                                                     teacher_ckpt):
    work, _ = kd_run
    twin = work / f'epoch_{EPOCHS}_student.pth'
    proc = run_tool(train_args(tmp_path / 'a', synthetic_data, teacher_ckpt) +
                    ['--resume', str(twin)], expect_fail=True)
    err = proc.stderr
    assert 'CheckpointMismatchError' in err and 'student-only file' in err
    assert f'model.student_ckpt={twin}' in err and 'Epoch(train)' not in proc.stdout
    other = safe_torch_load(work / f'epoch_{EPOCHS}.pth')
    other['state_dict']['distill_losses.loss_pkd.adapter.weight'] = torch.zeros(4, 4, 1, 1)
    path = tmp_path / 'other_config.pth'
    torch.save(other, path)
    proc = run_tool(train_args(tmp_path / 'b', synthetic_data, teacher_ckpt) +
                    ['--resume', str(path)], expect_fail=True)
    assert f"resume checkpoint '{path}' does not match" in proc.stderr
    assert 'another distillation config' in proc.stderr
    assert 'Epoch(train)' not in proc.stdout


# ---- mmkd's tools check upstream failures up front -----------------------------------------------
def test_teacher_with_classes_in_another_order_is_refused(tmp_path, synthetic_data,
                                                          teacher_ckpt):
    ckpt = safe_torch_load(teacher_ckpt)
    classes = ckpt['meta']['dataset_meta']['classes']
    ckpt['meta']['dataset_meta']['classes'] = classes[::-1]
    path = tmp_path / 'reordered.pth'
    torch.save(ckpt, path)
    proc = run_tool(train_args(tmp_path / 'w', synthetic_data, path), expect_fail=True)
    assert 'the same names in another order' in proc.stderr
    assert str(classes[::-1]) in proc.stderr and str(classes) in proc.stderr
    assert 'Epoch(train)' not in proc.stdout


def test_empty_val_set_and_misspelt_option_fail_before_training(tmp_path, synthetic_data,
                                                                teacher_ckpt):
    import json
    ann = json.loads(open(synthetic_data['val_ann']).read())
    ann.update(images=[], annotations=[])
    empty = tmp_path / 'empty_val.json'
    empty.write_text(json.dumps(ann))
    args = train_args(tmp_path / 'w', synthetic_data, teacher_ckpt)
    args = [a.replace(synthetic_data['val_ann'], str(empty)) for a in args]
    args = [a for a in args if not a.startswith('val_dataloader.dataset.data_root')] + [
        f'val_dataloader.dataset.ann_file={empty}']
    proc = run_tool(args, expect_fail=True)
    assert 'the val set is empty' in proc.stderr and 'val_cfg=None' in proc.stderr
    assert 'Epoch(train)' not in proc.stdout
    proc = run_tool(train_args(tmp_path / 'w2', synthetic_data, teacher_ckpt,
                               ['trian_cfg.max_epochs=1']), expect_fail=True)
    assert "'trian_cfg' is not an entry of the config (did you mean train_cfg" in proc.stderr


def test_segm_on_a_box_model_fails_before_inference(kd_run, synthetic_data):
    work, _ = kd_run
    proc = run_tool(['tools/test.py', STUDENT_CFG, str(work / f'epoch_{EPOCHS}_student.pth'),
                     '--eval', 'segm', '--work-dir', str(work / 'segm'), '--cfg-options',
                     *data_options(synthetic_data)], expect_fail=True)
    assert '--eval segm' in proc.stderr and 'predicts boxes only' in proc.stderr
    assert 'Epoch(test)' not in proc.stdout


def test_tools_log_no_known_third_party_deprecations(kd_run):
    _, proc = kd_run
    log = proc.stdout + proc.stderr
    for text in ('"FileClient" will be deprecated', '"HardDiskBackend" is the alias',
                 'pkg_resources is deprecated', '`torch.jit.script` is deprecated'):
        assert text not in log, text
