"""tools/benchmark.py and tools/benchmark_speed.py: planning, hashing, report math, doc
sections, and end-to-end smokes on the tiny synthetic data (1 epoch, 96 px images)."""
import json
import math
import os
import os.path as osp

import pytest
from conftest import data_options, run_tool

from mmkd.benchmark.report import (aggregate, gap_recovered, markdown_table, replace_section,
                                   Row, Stat)
from mmkd.benchmark.runs import (build_plan, config_hash, load_resolved, schedule_options,
                                 split_method_options)
from mmkd.benchmark.suite import DISTILL_METHODS, METHODS, PRESETS, resolve_methods

STUDENT = METHODS['student'].config
GK_TINY = 'model.distill_losses.loss_gk.pgm.min_size=4'


def tiny_options(data) -> list:
    """Image size and batch overrides of the test fixtures (the data root comes via --data)."""
    return [o for o in data_options(data) if 'data_root' not in o and 'ann_file' not in o]


# ---- hashing and schedules ---------------------------------------------------------------------
def test_hash_stable_and_sensitive(synthetic_data):
    opts = [f'train_dataloader.dataset.data_root={synthetic_data["data_root"]}/']
    h = config_hash(STUDENT, opts, 0)
    assert h == config_hash(STUDENT, list(opts), 0)
    assert h != config_hash(STUDENT, opts, 1)  # seed
    assert h != config_hash(STUDENT, opts + ['train_cfg.max_epochs=3'], 0)  # schedule
    assert h != config_hash(STUDENT, opts + ['model.backbone.base_channels=8'], 0)  # model
    assert h != config_hash(METHODS['teacher'].config, opts, 0)


def test_schedule_options_list_and_dict():
    cfg = load_resolved(STUDENT)
    opts = schedule_options(cfg, 6)
    assert 'train_cfg.max_epochs=6' in opts and 'param_scheduler.1.milestones=[4,6]' in opts
    assert 'param_scheduler.1.end=6' in opts and not any('param_scheduler.0' in o for o in opts)
    assert load_resolved(STUDENT, opts).param_scheduler[1].milestones == [4, 6]
    assert schedule_options(cfg, 12)[-2:] == ['param_scheduler.1.milestones=[8,11]',
                                              'param_scheduler.1.end=12']
    icd = METHODS['icd'].config  # param_scheduler = {student: [...], distill: [cosine]}
    cfg = load_resolved(icd, schedule_options(load_resolved(icd), 3))
    assert cfg.param_scheduler.student[1].milestones == [2, 3]
    assert cfg.param_scheduler.distill[0].T_max == 3 and cfg.param_scheduler.distill[0].end == 3
    assert cfg.train_cfg.max_epochs == 3 and cfg.train_cfg.val_begin == 4


def test_method_prefixed_options():
    shared, per = split_method_options(['a.b=1', f'pgm:{GK_TINY}', 'c=(9,9)'])
    assert shared == ['a.b=1', 'c=(9,9)'] and per == {'pgm': [GK_TINY]}
    with pytest.raises(ValueError, match='unknown method'):
        split_method_options(['nope:x.y=1'])


# ---- plans -------------------------------------------------------------------------------------
def test_plans(synthetic_data, tmp_path):
    root = synthetic_data['data_root']
    quick = build_plan(resolve_methods('quick'), PRESETS['quick'].seeds, 2, str(tmp_path), root)
    assert [(r.name, r.seed) for r in quick.runs] == [('teacher', 0), ('student', 0), ('pgm', 0)]
    teacher = quick.runs[0]
    assert '/cache/teacher-' in teacher.work_dir and teacher.status() == 'train'
    assert teacher.epochs == 6 and quick.runs[2].epochs == 2  # the teacher trains 3x as long
    assert quick.runs[2].needs == [teacher.work_dir] and quick.runs[1].needs == []
    assert f'model.teacher_ckpt={teacher.final_checkpoint}' in quick.runs[2].options
    assert 'randomness.seed=0' in quick.runs[2].options
    assert 'model.distill_losses.loss_gk.pgm.mode=offline' in quick.runs[2].options

    full = build_plan(resolve_methods('full'), [0, 1], 2, str(tmp_path), root)
    names = [r.name for r in full.runs]
    assert names[:2] == ['teacher', 'cls_teacher'] and names.count('teacher') == 1
    for m in ['student'] + DISTILL_METHODS:
        assert sorted(r.seed for r in full.runs if r.name == m) == [0, 1], m
    assert {'pgm', 'pgm_online', 'icd', 'dsig', 'gid', 'dicod', 'pkd', 'cwd', 'fgd', 'mgd',
            'feat_kl'} <= set(names)
    dicod = next(r for r in full.runs if r.name == 'dicod')
    cls = full.runs[1]
    assert f'model.teacher_ckpt={cls.final_checkpoint}' in dicod.options
    assert dicod.needs == [cls.work_dir]
    assert full.runs[0].work_dir == teacher.work_dir  # the teacher is shared between presets
    assert len({r.work_dir for r in full.runs}) == len(full.runs)
    with pytest.raises(ValueError, match='unknown method'):
        resolve_methods('quick', ['pgm', 'bogus'])
    longer = build_plan(['pgm'], [0], 2, str(tmp_path), root, teacher_epochs=3)
    assert longer.teacher.epochs == 3 and longer.teacher.final_checkpoint.endswith('epoch_3.pth')
    assert longer.teacher.work_dir != teacher.work_dir and longer.runs[1].epochs == 2
    assert f'model.teacher_ckpt={longer.teacher.final_checkpoint}' in longer.runs[2].options


def _fake_checkpoint(path, epoch=5, fingerprint=None) -> str:
    import torch
    meta = dict(epoch=epoch, mmkd=dict(train_ann_sha256=fingerprint) if fingerprint else {})
    torch.save(dict(meta=meta, state_dict={}), str(path))
    return str(path)


def test_plan_with_a_given_teacher(synthetic_data, tmp_path):
    root = synthetic_data['data_root']
    given = _fake_checkpoint(tmp_path / 'teacher.pth', epoch=5)
    plan = build_plan(['pgm'], [0], 2, str(tmp_path / 'w'), root, teacher_ckpt=given)
    teacher, student, pgm = plan.runs
    assert teacher.given_checkpoint == given and teacher.final_checkpoint == given
    assert teacher.status() == 'test' and teacher.epochs == 5  # evaluated, never trained
    assert f'model.teacher_ckpt={given}' in pgm.options and pgm.needs == [teacher.work_dir]
    # other weights under the same path: new teacher and distillation runs, same student
    _fake_checkpoint(tmp_path / 'teacher.pth', epoch=7)
    again = build_plan(['pgm'], [0], 2, str(tmp_path / 'w'), root, teacher_ckpt=given)
    assert again.runs[0].work_dir != teacher.work_dir and again.runs[2].key != pgm.key
    assert again.runs[1].key == student.key
    with pytest.raises(FileNotFoundError):
        build_plan(['pgm'], [0], 2, str(tmp_path / 'w'), root, teacher_ckpt='nope/t.pth')


def test_shipped_teacher_fingerprint(synthetic_data, tmp_path):
    from mmkd.benchmark.runs import shipped_teacher_status
    from mmkd.utils.checkpoint import file_sha256
    root = synthetic_data['data_root']
    sha = file_sha256(osp.join(root, 'annotations', 'instances_train.json'))
    ok, why = shipped_teacher_status(root, _fake_checkpoint(tmp_path / 'a.pth', fingerprint=sha))
    assert ok and 'trained on this data set' in why
    ok, why = shipped_teacher_status(root, _fake_checkpoint(tmp_path / 'b.pth', fingerprint='0'))
    assert not ok and 'other data' in why
    ok, why = shipped_teacher_status(root, _fake_checkpoint(tmp_path / 'c.pth'))
    assert not ok and 'no training-data fingerprint' in why
    assert not shipped_teacher_status(root, str(tmp_path / 'missing.pth'))[0]
    # the checkpoint in the repo is a published one: fp16 weights with a fingerprint
    import torch
    from mmkd.benchmark.suite import SHIPPED_TEACHER
    from mmkd.utils.paths import REPO_ROOT
    ckpt = torch.load(osp.join(REPO_ROOT, SHIPPED_TEACHER), map_location='cpu',
                      weights_only=True)
    assert len(ckpt['meta']['mmkd']['train_ann_sha256']) == 64 and ckpt['meta']['epoch'] == 36
    assert 'optimizer' not in ckpt
    assert {v.dtype for v in ckpt['state_dict'].values() if v.is_floating_point()} == {
        torch.float16}


class _ScriptedExecutor:
    """An Executor whose runs 'train' by sleeping and writing their final checkpoint (the
    scheduling is under test here, not training; the end-to-end test below trains for real)."""

    @staticmethod
    def make(plan, fail=(), jobs=2, keep_going=True):
        import threading
        import time

        from mmkd.benchmark.runs import Executor, RunFailed

        class Scripted(Executor):
            events = []
            lock = threading.Lock()

            def _do(self, run, status, t_start, later):
                with self.lock:
                    self.events.append(('start', run.label))
                time.sleep(0.05)
                if run.label in fail:
                    raise RunFailed('scripted failure')
                os.makedirs(osp.dirname(run.final_checkpoint), exist_ok=True)
                open(run.final_checkpoint, 'w').close()
                with open(run.metrics_file, 'w') as f:
                    json.dump({}, f)
                with self.lock:
                    self.events.append(('end', run.label))

        lines = []
        return Scripted(plan, printer=lines.append, keep_going=keep_going, jobs=jobs), lines


def test_executor_waits_for_teachers_and_skips_dependents_of_failures(synthetic_data, tmp_path):
    root = synthetic_data['data_root']
    plan = build_plan(['pgm', 'dicod'], [0, 1], 1, str(tmp_path / 'w'), root)
    ex, lines = _ScriptedExecutor.make(plan, jobs=2)
    assert ex.run_all() and not ex.failed
    ev = ex.events
    end = {label: i for i, (kind, label) in enumerate(ev) if kind == 'end'}
    start = {label: i for i, (kind, label) in enumerate(ev) if kind == 'start'}
    for seed in (0, 1):
        assert start[f'pgm seed {seed}'] > end['teacher']
        assert start[f'dicod seed {seed}'] > end['cls_teacher']
    assert start['cls_teacher'] < end['teacher']  # two lanes: it did not wait for the teacher
    assert max(sum(1 for k, _ in ev[:i + 1] if k == 'start')
               - sum(1 for k, _ in ev[:i + 1] if k == 'end') for i in range(len(ev))) == 2

    plan = build_plan(['pgm', 'dicod'], [0], 1, str(tmp_path / 'w2'), root)
    ex, lines = _ScriptedExecutor.make(plan, fail=('teacher', ), jobs=2)
    assert not ex.run_all()
    failed = sorted(r.label for r, _ in ex.failed)
    assert failed == ['pgm seed 0', 'teacher']  # dicod (classifier teacher) still ran
    assert any('pgm seed 0: skipped, its teacher failed' in ln for ln in lines)
    assert osp.isfile(plan.runs[-1].metrics_file)  # dicod seed 0
    # without --keep-going nothing new starts after a failure
    plan = build_plan(['pgm'], [0], 1, str(tmp_path / 'w3'), root)
    ex, _ = _ScriptedExecutor.make(plan, fail=('teacher', ), jobs=1, keep_going=False)
    assert not ex.run_all() and [e for e in ex.events if e[0] == 'start'] == [
        ('start', 'teacher')]


# ---- report math -------------------------------------------------------------------------------
def test_aggregate_and_gap():
    s = aggregate([10.0, 12.0, 14.0])
    assert s.mean == pytest.approx(12.0) and s.std == pytest.approx(2.0) and s.n == 3
    one = aggregate([5.0, -100.0])  # COCO's -1 (x100) means "no such objects": ignored
    assert one.n == 1 and one.std is None and one.fmt() == '5.0'
    assert aggregate([]).fmt() == 'n/a'
    assert gap_recovered(12.0, 10.0, 15.0) == pytest.approx(0.4)
    assert gap_recovered(9.0, 10.0, 15.0) == pytest.approx(-0.2)
    assert gap_recovered(12.0, 10.0, 9.0) is None


def _row(name, aps):
    stats = {k: aggregate(aps) for k in ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl')}
    return Row(name, name, stats, Stat(60.0, None, 1), list(range(len(aps))))


def test_markdown_table_numbers():
    rows = {'teacher': _row('teacher', [20.0]), 'student': _row('student', [10.0, 12.0]),
            'pgm': _row('pgm', [15.0, 17.0]), 'cwd': _row('cwd', [11.0, 12.0])}
    table, remarks = markdown_table(rows, ['teacher', 'student', 'pgm', 'cwd'])
    lines = table.splitlines()
    pgm = next(l for l in lines if l.startswith('| pgm'))
    assert '16.0 ± 1.4' in pgm and '+5.0' in pgm and '+56 %' in pgm and '| yes |' in pgm
    cwd = next(l for l in lines if l.startswith('| cwd'))
    assert '+0.5' in cwd and '+6 %' in cwd and '| no |' in cwd
    assert '+9.0' in next(l for l in lines if l.startswith('| teacher'))
    assert 'meets' in remarks[0]
    # a method that widens the student is measured against the widened plain student
    rows.update(wide=_row('wide', [14.0, 14.0]), dsig=_row('dsig', [15.0, 15.0]))
    table, _ = markdown_table(rows, ['teacher', 'student', 'wide', 'dsig'], {'dsig': 'wide'})
    dsig = next(l for l in table.splitlines() if l.startswith('| dsig'))
    assert 'vs `wide`' in dsig and '+1.0' in dsig and '+17 %' in dsig  # 1 / (20 - 14)
    assert '+3.0' in next(l for l in table.splitlines() if l.startswith('| wide'))
    assert METHODS['dsig'].baseline == 'student_n128'
    assert METHODS['student_n128'].role == 'baseline' and 'student_n128' in PRESETS['full'].methods
    rows['teacher'] = _row('teacher', [12.0])
    assert 'below' in markdown_table(rows, ['teacher', 'student'])[1][0]


def test_replace_section_keeps_the_rest(tmp_path):
    doc = tmp_path / 'bench.md'
    doc.write_text('# Title\n\nintro\n\n## Other\n\nkeep me\n')
    replace_section(str(doc), 'first body')
    text = doc.read_text()
    assert text.startswith('# Title\n\nintro\n\n## Other\n\nkeep me\n')
    assert '<!-- benchmark:BEGIN -->\nfirst body\n<!-- benchmark:END -->' in text
    doc.write_text(text + '\n## After\n\ntail\n')
    replace_section(str(doc), 'second body')
    replace_section(str(doc), 'speed body', '<!-- speed:BEGIN -->', '<!-- speed:END -->')
    text = doc.read_text()
    assert 'first body' not in text and text.count('second body') == 1
    assert text.index('keep me') < text.index('second body') < text.index('## After')
    assert text.endswith('tail\n\n<!-- speed:BEGIN -->\nspeed body\n<!-- speed:END -->\n')
    doc.write_text('broken <!-- benchmark:BEGIN --> only\n')
    with pytest.raises(ValueError, match='only one of the markers'):
        replace_section(str(doc), 'x')


# ---- end to end --------------------------------------------------------------------------------
def test_benchmark_quick_end_to_end_and_resume(synthetic_data, tmp_path):
    work, doc = tmp_path / 'work', tmp_path / 'docs' / 'bench.md'
    doc.parent.mkdir()
    doc.write_text('# Benchmarks\n\nhand-written part\n')
    args = ['tools/benchmark.py', '--preset', 'quick', '--epochs', '1', '--teacher-epochs', '1',
            '--jobs', '2', '--data',
            synthetic_data['data_root'], '--work-dir', str(work), '--doc', str(doc),
            '--cfg-options', *tiny_options(synthetic_data), f'pgm:{GK_TINY}']
    out = run_tool(args, timeout=900).stdout
    assert 'estimated time' in out and '[1/3] teacher: training...' in out and 'ETA' in out
    assert '[3/3] pgm seed 0: training...' in out
    metrics = sorted(work.glob('**/metrics.json'))
    assert len(metrics) == 3
    for m in metrics:
        data = json.loads(m.read_text())
        assert 0.0 <= data['coco/bbox_mAP'] <= 1.0 and 'coco/bbox_mAP_75' in data
    assert len(list(work.glob('cache/teacher-*/epoch_1.pth'))) == 1
    pgm_dir = next(work.glob('runs/pgm/seed0-*'))
    assert (pgm_dir / 'epoch_1_student.pth').is_file()
    text = doc.read_text()
    assert text.startswith('# Benchmarks\n\nhand-written part\n')
    assert '<!-- benchmark:BEGIN -->' in text and 'python tools/benchmark.py --preset quick' in text
    assert '| PGM + RDM, offline PGM' in text
    images = doc.parent / 'images'
    for png in ('benchmark_ap.png', 'benchmark_loss.png'):
        assert (images / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

    # second invocation: everything is done, nothing is trained or evaluated again
    out2 = run_tool(args, timeout=300).stdout
    assert out2.count('done, skipped') == 3 and 'training...' not in out2
    assert 'evaluating...' not in out2
    # a run trained but not evaluated is only evaluated; an interrupted one resumes
    os.remove(pgm_dir / 'metrics.json')
    dry = run_tool(args + ['--dry-run'], timeout=300).stdout
    assert 'trained; evaluate only' in dry
    os.remove(pgm_dir / 'epoch_1_student.pth')
    dry = run_tool(args + ['--dry-run'], timeout=300).stdout
    assert 'resume from epoch 1' in dry
    # a given teacher is evaluated, not trained, and the methods distil from it
    teacher_ckpt = str(next(work.glob('cache/teacher-*/epoch_1.pth')))
    i = args.index('--teacher-epochs')
    given = args[:i] + args[i + 2:] + ['--teacher-ckpt', teacher_ckpt, '--dry-run']
    dry = run_tool(given, timeout=300).stdout
    assert f'teacher: {teacher_ckpt} (--teacher-ckpt)' in dry
    assert 'given checkpoint; evaluate' in dry and '2 runs side by side' in dry


def test_benchmark_speed_two_methods(synthetic_data, tmp_path):
    doc = tmp_path / 'bench.md'
    doc.write_text('# Benchmarks\n\nkeep\n')
    out = run_tool(['tools/benchmark_speed.py', '--methods', 'feat_kl,pgm_online', '--iters',
                    '2', '--warmup', '0', '--memory-steps', '1', '--data', synthetic_data['data_root'], '--doc',
                    str(doc), '--cfg-options', *tiny_options(synthetic_data),
                    f'pgm_online:{GK_TINY}']).stdout
    assert 'ratio' in out
    text = doc.read_text()
    assert text.startswith('# Benchmarks\n\nkeep\n') and '<!-- speed:BEGIN -->' in text
    rows = [l for l in text.splitlines() if l.startswith('| feat_kl') or l.startswith('| pgm')]
    assert len(rows) == 2 and all('failed' not in r for r in rows)
    ratio = float(rows[0].split('**')[1].rstrip('x'))
    assert math.isfinite(ratio) and ratio > 0
    assert 'online refresh' in rows[1]
    # CPU: peak RSS of each model trained alone in a spawned process, both sides present
    import re
    mem = re.search(r'RSS (\d+) / (\d+) MiB', rows[0])
    assert mem and all(int(v) > 100 for v in mem.groups()), rows[0]
    assert osp.isfile(doc)


def test_memory_section_numbers():
    from mmkd.benchmark.speed import SpeedResult, memory_section, memory_text
    ok = SpeedResult('pkd', 'fp32', cpu_mem=dict(plain_peak=500.0, kd_peak=550.0,
                                                 plain_growth=100.0, kd_growth=150.0))
    body = memory_section([ok, SpeedResult('cwd', 'fp32', error='boom')], 'python x', 'CPU', 4,
                          '2026-01-01')
    row = next(l for l in body.splitlines() if l.startswith('| pkd'))
    assert '| 500 | 550 | **1.10x** | 100 | 150 | 1.50x |' in row
    assert '| cwd | failed: boom |' in body and '```\npython x\n```' in body
    assert memory_text(ok).startswith('RSS 500 / 550 MiB (1.10x)')
    assert memory_text(SpeedResult('a', 'fp32')) == 'not measured'
