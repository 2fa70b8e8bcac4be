"""tools/benchmark.py and tools/benchmark_speed.py: planning, hashing, report math, doc
sections, and end-to-end smokes on the tiny synthetic data (1 epoch, 96 px images)."""
import json
import math
import os
import os.path as osp

import pytest

from conftest import data_options, run_tool
from mmkd.benchmark.plan import build_plan
from mmkd.benchmark.presets import METHOD_PRESETS
from mmkd.benchmark.report import (Row, Stat, aggregate, gap_recovered, markdown_table,
                                   replace_section)
from mmkd.benchmark.runs import config_hash, load_resolved, schedule_options, split_method_options
from mmkd.benchmark.suite import METHODS, PRESETS, builtin_spec, resolve_methods
from mmkd.utils.torch_compat import safe_torch_load

STUDENT = METHODS['student'].config
GK_TINY = 'model.distill_losses.loss_gk.pgm.min_size=4'


def tiny_options(data) -> list:
    """Image size and batch overrides of the test fixtures (the data root comes via --data)."""
    return [o for o in data_options(data) if 'data_root' not in o and 'ann_file' not in o]


def plan_of(data, methods, seeds, epochs, work, **kw):
    """The built-in benchmark's plan on the test data (tiny images, as the e2e test runs)."""
    spec = builtin_spec(data['data_root'], methods, seeds, str(work), epochs,
                        extra_options=tiny_options(data), **kw)
    return build_plan(spec)


# ---- hashing and schedules ---------------------------------------------------------------------
def test_hash_stable_and_sensitive(synthetic_data):
    opts = [f'train_dataloader.dataset.data_root={synthetic_data["data_root"]}/']
    cfg = load_resolved(STUDENT, opts)
    h = config_hash(cfg, 0)
    assert h == config_hash(load_resolved(STUDENT, list(opts)), 0)
    assert h != config_hash(cfg, 1)  # seed
    assert h != config_hash(load_resolved(STUDENT, opts + ['train_cfg.max_epochs=3']), 0)
    assert h != config_hash(load_resolved(STUDENT, opts + ['model.backbone.base_channels=8']), 0)
    assert h != config_hash(load_resolved(METHODS['teacher'].config, opts), 0)
    assert h != config_hash(cfg, 0, extra='start=abc')  # e.g. another starting checkpoint


def test_schedule_options_list_and_dict():
    cfg = load_resolved(STUDENT)
    opts = schedule_options(cfg, 6)
    assert 'train_cfg.max_epochs=6' in opts and 'param_scheduler.1.milestones=[4,6]' in opts
    assert 'param_scheduler.1.end=6' in opts and not any('param_scheduler.0' in o for o in opts)
    assert load_resolved(STUDENT, opts).param_scheduler[1].milestones == [4, 6]
    assert schedule_options(cfg, 12)[-2:] == ['param_scheduler.1.milestones=[8,11]',
                                              'param_scheduler.1.end=12']
    # an iteration-based warm-up longer than an epoch is cut to one epoch
    assert 'param_scheduler.0.end=40' in schedule_options(cfg, 6, iters_per_epoch=40)
    assert not any('param_scheduler.0' in o for o in schedule_options(cfg, 6, 100))
    # a logging interval longer than an epoch is cut to one epoch (loss curves need steps)
    assert 'default_hooks.logger.interval=3' in schedule_options(cfg, 6, iters_per_epoch=3)
    assert not any('logger' in o for o in schedule_options(cfg, 6, 100))
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
    quick = plan_of(synthetic_data, resolve_methods('quick'), PRESETS['quick'].seeds, 2, tmp_path)
    assert [(r.name, r.seed) for r in quick.runs] == [('teacher', 0), ('student', 0), ('pgm', 0)]
    teacher, student, pgm = quick.runs
    assert '/cache/teacher-' in teacher.work_dir and teacher.status() == 'train'
    assert teacher.epochs == 6 and pgm.epochs == 2  # the teacher trains 3x as long
    assert pgm.needs == [teacher.work_dir] and student.needs == []
    assert pgm.cfg['model']['teacher_ckpt'] == teacher.final_checkpoint
    assert pgm.cfg['randomness']['seed'] == 0 and pgm.cfg['train_cfg']['max_epochs'] == 2
    assert pgm.cfg['model']['distill_losses']['loss_gk']['pgm']['mode'] == 'offline'
    assert pgm.cfg['model']['distill_losses']['loss_gk']['pgm']['min_size'] == 12  # tuning
    assert pgm.config == osp.join(pgm.work_dir, 'benchmark_config.py')
    assert quick.labels['pgm'].startswith('PGM + RDM, offline PGM')

    full = plan_of(synthetic_data, resolve_methods('full'), [0, 1], 2, tmp_path)
    names = [r.name for r in full.runs]
    assert names[:2] == ['teacher', 'cls_teacher'] and names.count('teacher') == 1
    for m in ['student', 'student_n128'] + list(METHOD_PRESETS):
        assert sorted(r.seed for r in full.runs if r.name == m) == [0, 1], m
    assert full.methods.index('student_n128') == full.methods.index('dsig') + 1
    assert full.baselines['dsig'] == 'student_n128' and not full.skipped
    dicod = next(r for r in full.runs if r.name == 'dicod')
    cls = full.runs[1]
    assert dicod.cfg['model']['teacher_ckpt'] == cls.final_checkpoint
    assert dicod.needs == [cls.work_dir]
    assert full.runs[0].work_dir == teacher.work_dir  # the teacher is shared between presets
    assert len({r.work_dir for r in full.runs}) == len(full.runs)
    with pytest.raises(ValueError, match='unknown method'):
        resolve_methods('quick', ['pgm', 'bogus'])
    longer = plan_of(synthetic_data, ['pgm'], [0], 2, tmp_path, teacher_epochs=3)
    assert longer.teacher.epochs == 3 and longer.teacher.final_checkpoint.endswith('epoch_3.pth')
    assert longer.teacher.work_dir != teacher.work_dir and longer.runs[1].epochs == 2
    assert longer.runs[2].cfg['model']['teacher_ckpt'] == longer.teacher.final_checkpoint


def test_finetune_plan(synthetic_data, tmp_path):
    """finetune: every run starts from the converged student (trained first, cached, when no
    checkpoint is given); DSIG's widened student gets its own converged start."""
    plan = plan_of(synthetic_data, ['pgm', 'dsig'], [0], 2, tmp_path, protocol='finetune',
                   student_init_epochs=3)
    init, init_wide = [r for r in plan.runs if r.role == 'student_init']
    assert init.name == 'student_init' and init.epochs == 3 and '/cache/student_init-' in \
        init.work_dir
    assert init_wide.cfg['model']['neck']['out_channels'] == 128
    by = {r.name: r for r in plan.runs}
    assert by['student'].cfg['load_from'] == init.final_checkpoint
    assert by['student'].needs == [init.work_dir]
    assert by['pgm'].cfg['model']['student_ckpt'] == init.final_checkpoint
    assert set(by['pgm'].needs) == {plan.teacher.work_dir, init.work_dir}
    assert by['dsig'].cfg['model']['student_ckpt'] == init_wide.final_checkpoint
    assert by['student_n128'].cfg['load_from'] == init_wide.final_checkpoint
    scratch = plan_of(synthetic_data, ['pgm'], [0], 2, tmp_path)
    assert {r.key for r in scratch.runs if r.name == 'student'}.isdisjoint(
        {r.key for r in plan.runs if r.name == 'student'})
    # without a converged student DSIG's widened student cannot start: skipped, with why
    given = str(init.work_dir) + '/none.pth'
    with pytest.raises(FileNotFoundError, match='--student-ckpt: student checkpoint'):
        plan_of(synthetic_data, ['pgm'], [0], 2, tmp_path, protocol='finetune',
                student_ckpt=given)


def test_auto_balance_rows(synthetic_data, tmp_path):
    import inspect

    from mmkd.models.detectors.distill_detector import DistillDetector
    if 'auto_balance' not in inspect.signature(DistillDetector.__init__).parameters:
        pytest.skip('DistillDetector(auto_balance=...) not there yet')
    plan = plan_of(synthetic_data, ['cwd'], [0], 1, tmp_path, auto_balance=True)
    by = {r.name: r for r in plan.runs}
    assert plan.methods == ['cwd', 'cwd+ab'] and plan.labels['cwd+ab'] == 'CWD + auto-balance'
    assert by['cwd+ab'].cfg['model']['auto_balance'] is True
    assert 'auto_balance' not in by['cwd'].cfg['model'] and by['cwd+ab'].key != by['cwd'].key
    assert '/runs/cwd+ab/' in by['cwd+ab'].work_dir


def test_plan_with_a_given_teacher(synthetic_data, teacher_ckpt, tmp_path):
    import shutil
    given = str(tmp_path / 'teacher.pth')
    shutil.copy(teacher_ckpt, given)
    plan = plan_of(synthetic_data, ['pgm'], [0], 2, tmp_path / 'w', teacher_ckpt=given)
    teacher, student, pgm = plan.runs
    assert teacher.given_checkpoint == given and teacher.final_checkpoint == given
    assert teacher.status() == 'test'  # evaluated, never trained
    assert pgm.cfg['model']['teacher_ckpt'] == given and pgm.needs == [teacher.work_dir]
    # other weights under the same path: new teacher and distillation runs, same student
    import torch
    ckpt = safe_torch_load(given)
    ckpt['state_dict'] = {k: v + 1 if v.is_floating_point() else v
                          for k, v in ckpt['state_dict'].items()}
    torch.save(ckpt, given)
    again = plan_of(synthetic_data, ['pgm'], [0], 2, tmp_path / 'w', teacher_ckpt=given)
    assert again.runs[0].work_dir != teacher.work_dir and again.runs[2].key != pgm.key
    assert again.runs[1].key == student.key
    with pytest.raises(FileNotFoundError):
        plan_of(synthetic_data, ['pgm'], [0], 2, tmp_path / 'w', teacher_ckpt='nope/t.pth')


def _fake_checkpoint(path, epoch=5, fingerprint=None) -> str:
    import torch
    meta = dict(epoch=epoch, mmkd=dict(train_ann_sha256=fingerprint) if fingerprint else {})
    torch.save(dict(meta=meta, state_dict={}), str(path))
    return str(path)


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
    ckpt = safe_torch_load(osp.join(REPO_ROOT, SHIPPED_TEACHER))
    assert len(ckpt['meta']['mmkd']['train_ann_sha256']) == 64 and ckpt['meta']['epoch'] == 36
    assert 'optimizer' not in ckpt
    assert {v.dtype for v in ckpt['state_dict'].values() if v.is_floating_point()} == {
        torch.float16}


class _ScriptedExecutor:
    """An Executor whose runs 'train' by writing their final checkpoint at once (the
    scheduling is under test here, not training; the end-to-end test below trains for real).

    ``overlap=(a, b)``: run ``a`` finishes only after run ``b`` has started, so whether the
    executor runs them side by side is decided by the executor alone, not by a sleep racing
    the thread scheduler (``a`` gives up after 60 s, and the ordering assertion then fails)."""

    @staticmethod
    def make(plan, fail=(), jobs=2, keep_going=True, overlap=None):
        import threading

        from mmkd.benchmark.runs import Executor, RunFailed

        started = {r.label: threading.Event() for r in plan.runs}

        class Scripted(Executor):
            events = []
            lock = threading.Lock()

            def _do(self, run, status, t_start, later):
                with self.lock:
                    self.events.append(('start', run.label))
                started[run.label].set()
                if overlap and run.label == overlap[0]:
                    started[overlap[1]].wait(timeout=60)
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
    plan = plan_of(synthetic_data, ['pgm', 'dicod'], [0, 1], 1, tmp_path / 'w')
    ex, lines = _ScriptedExecutor.make(plan, jobs=2, overlap=('teacher', 'cls_teacher'))
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

    plan = plan_of(synthetic_data, ['pgm', 'dicod'], [0], 1, tmp_path / 'w2')
    ex, lines = _ScriptedExecutor.make(plan, fail=('teacher', ), jobs=2)
    assert not ex.run_all()
    failed = sorted(r.label for r, _ in ex.failed)
    assert failed == ['pgm seed 0', 'teacher']  # dicod (classifier teacher) still ran
    assert any('pgm seed 0: skipped, its teacher failed' in ln for ln in lines)
    assert osp.isfile(plan.runs[-1].metrics_file)  # dicod seed 0
    # without --keep-going nothing new starts after a failure
    plan = plan_of(synthetic_data, ['pgm'], [0], 1, tmp_path / 'w3')
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
    rows['teacher'] = _row('teacher', [12.0])
    remarks = markdown_table(rows, ['teacher', 'student'])[1]
    assert 'below' in remarks[0] and len(remarks) == 1  # 1 AP above the student
    rows['teacher'] = _row('teacher', [10.5])  # not better than the student (11.0)
    remarks = markdown_table(rows, ['teacher', 'student'])[1]
    assert 'below' in remarks[0] and 'not better than the student' in remarks[1]


def test_loss_balance_table(tmp_path):
    """Ratios of the runs' loss_balance.json, averaged over seeds, per method and term; a run
    without the file (or with a broken one) adds nothing."""
    from mmkd.benchmark.report import loss_balance_table
    from mmkd.benchmark.runs import Plan, Run

    def run(name, seed, data):
        wd = tmp_path / f'{name}{seed}'
        wd.mkdir()
        if data is not None:
            (wd / 'loss_balance.json').write_text(data if isinstance(data, str) else
                                                  json.dumps(data))
        return Run(name, 'distill', str(wd / 'c.py'), seed, [], str(wd), 'k', 1)

    def lb(ratio, final, scale=1.0, warned=False):
        return dict(version=1, measured_iters=20, detection_loss=1.3,
                    terms={'loss_cwd': dict(ratio=ratio, scale=scale, warned=warned)},
                    final={'loss_cwd': final})

    plan = Plan([run('cwd', 0, lb(40.0, 2.0, warned=True)), run('cwd', 1, lb(60.0, 4.0)),
                 run('cwd+ab', 0, lb(1.0, 0.5, scale=0.02)), run('pkd', 0, None),
                 run('fgd', 0, '{broken')], ['cwd', 'cwd+ab', 'pkd', 'fgd'], [0, 1], 1,
                str(tmp_path))
    table = loss_balance_table(plan)
    rows = [l for l in table.splitlines() if l.startswith('| cwd')]
    assert rows == ['| cwd | `loss_cwd` | 50.00 | 3.00 | 1 | yes |',
                    '| cwd+ab | `loss_cwd` | 1.00 | 0.50 | 0.02 | no |']
    assert 'first 20 iterations' in table and '| pkd' not in table
    plan.runs = plan.runs[3:]
    assert loss_balance_table(plan) is None


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
    for png in ('benchmark_ap.png', 'benchmark_ap_sizes.png', 'benchmark_loss.png'):
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
                    '2', '--warmup', '0', '--memory-steps', '1', '--data',
                    synthetic_data['data_root'], '--doc',
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
