"""Which distillation method helps my detector? Every method side by side, same data, seeds and
budget, on the built-in synthetic data or on your own COCO-format data and teacher/student pair.

Your data (any mmdet detector pair, one- or two-stage):

    python tools/benchmark.py --data-config MY_DATA.py|MY_COCO_FOLDER \\
        --teacher T.py --teacher-ckpt T.pth --student S.py [--student-ckpt S.pth] \\
        [--methods pgm,pgm_online,icd,dsig,gid,pkd,cwd,fgd,mgd,feat_kl,dicod] [--seeds 0,1] \\
        [--epochs N] [--protocol scratch|finetune] [--auto-balance] [--img-scale W,H]

The built-in data:

    python tools/benchmark.py [--preset quick|full] [--methods pgm,cwd] [--seeds 0,1]
        [--epochs N] [--protocol scratch|finetune] [--data data/synthetic]
        [--teacher-ckpt PATH | --train-teacher [--teacher-epochs N]] [--student-ckpt PATH]

Common: [--jobs N] [--work-dir work_dirs/benchmark] [--doc FILE] [--dry-run] [--report-only]
[--keep-going] [--cfg-options KEY=VALUE ... | METHOD:KEY=VALUE ...]

MY_DATA.py is an mmdet dataset config (train_dataloader, val_dataloader, val_evaluator: a
CocoMetric). A folder is read as COCO (ROOT/{train,val}/annotations.json + images/, or
ROOT/annotations/instances_{train,val}.json + ROOT/{train,val}/); mmkd writes its data config to
<work-dir>/data_config.py. Every method is a preset applied to the pair (adapters, one- or
two-stage variant, strides and widths read from the built models); a method that cannot apply
is skipped with the reason, in the plan and the report. Protocols: scratch (each student from
its own initialisation) or finetune (every run, the plain student included, starts from the
converged student --student-ckpt and trains N more epochs). --auto-balance adds a NAME+ab row
(model.auto_balance=True) next to each method.

Every model is a fresh tools/train.py process, evaluated on the val split with tools/test.py
(COCO box AP); the report (table, AP and AP-by-size bars, loss curves, loss balance) goes into
--doc between <!-- benchmark:BEGIN/END --> markers (finetune: benchmark-finetune), the rest of
the file kept. Interrupted? Run the same command again: finished runs are skipped, unfinished
ones resume from their last checkpoint.
"""
import argparse
import os.path as osp
import shlex
import sys
import time
import warnings

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
warnings.filterwarnings('ignore', message='.*pkg_resources.*')

from mmkd.utils.tool_warnings import quiet_known_warnings  # noqa: E402

quiet_known_warnings()
from mmkd.benchmark.plan import PROTOCOLS, BenchmarkSpec, build_plan, expand_methods  # noqa: E402
from mmkd.benchmark.presets import METHOD_PRESETS  # noqa: E402
from mmkd.benchmark.report import build_report  # noqa: E402
from mmkd.benchmark.runs import (Executor, default_jobs, ensure_data, fmt_seconds,  # noqa: E402
                                 shipped_status, short_path)
from mmkd.benchmark.suite import (CLS_TEACHER_CONFIG, PRESETS, SHIPPED_STUDENT,  # noqa: E402
                                  SHIPPED_TEACHER, STUDENT_INIT_CONFIG, builtin_spec,
                                  resolve_methods)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog='methods: ' + ', '.join(METHOD_PRESETS))
    g = p.add_argument_group('your data and pair')
    g.add_argument('--data-config', help='mmdet dataset config, or a COCO-format folder')
    g.add_argument('--teacher', help='teacher config (path, mmdet::path, or a dict literal)')
    g.add_argument('--student', help='student config (path, mmdet::path, or a dict literal); '
                   'its num_classes is set from the data')
    g.add_argument('--img-scale', help='W,H: Resize scale of the data config written for a '
                   'folder (default: the student config\'s pipeline, else 1333,800)')
    g.add_argument('--batch-size', type=int, default=2,
                   help='images per batch of the data config written for a folder')
    g.add_argument('--cls-teacher', help='DICOD: crop-classifier config (e.g. '
                   f'{CLS_TEACHER_CONFIG}), retargeted to the data and trained here')
    g.add_argument('--cls-teacher-ckpt', help='DICOD: a trained checkpoint of --cls-teacher')
    b = p.add_argument_group('the built-in data')
    b.add_argument('--preset', choices=sorted(PRESETS), default=None,
                   help='method set on the built-in data (default quick)')
    b.add_argument('--data', default='data/synthetic',
                   help='synthetic data folder (generated with the defaults when missing)')
    b.add_argument('--train-teacher', action='store_true',
                   help='train the teacher instead of using a shipped/given checkpoint')
    b.add_argument('--teacher-epochs', type=int,
                   help='train the teacher this long (default: 3 x --epochs); implies '
                   '--train-teacher')
    b.add_argument('--cls-epochs', type=int,
                   help='epochs of DICOD\'s classifier teacher (default: its config\'s)')
    c = p.add_argument_group('common')
    c.add_argument('--teacher-ckpt', default=None,
                   help='trained teacher; on the built-in data "auto" (default) uses the '
                   'shipped one when it was trained on --data, else trains one')
    c.add_argument('--student-ckpt', default=None,
                   help='finetune: the converged student every run starts from; on the '
                   'built-in data "auto" (default) uses the shipped one when it was trained on '
                   '--data, else trains it first (cached)')
    c.add_argument('--student-init-epochs', type=int,
                   help='finetune: train converged students this long when there is no '
                   'checkpoint (default on the built-in data: 36, as its converged student)')
    c.add_argument('--protocol', choices=PROTOCOLS, default='scratch')
    c.add_argument('--methods', help='comma-separated methods (default: the preset\'s; your '
                   'data: all); NAME+ab runs NAME with model.auto_balance=True')
    c.add_argument('--auto-balance', action='store_true',
                   help='add a NAME+ab row (model.auto_balance=True) next to every method')
    c.add_argument('--seeds', help='comma-separated seeds (default: the preset\'s; your data: 0)')
    c.add_argument('--epochs', type=int, help='training length of every student run (default: '
                   'the student config\'s); lr steps at 2/3 and 11/12 of it')
    c.add_argument('--jobs', type=int, default=None,
                   help='runs trained side by side (default: 2 on a CPU with >= 2 cores, '
                   '1 with a GPU); each gets cores/jobs threads')
    c.add_argument('--work-dir', default='work_dirs/benchmark')
    c.add_argument('--doc', default=None,
                   help='markdown file whose benchmark section is written ("" for none); '
                   'default: docs/benchmarks.md for the built-in full preset, else '
                   '<work-dir>/report*.md (a quick run never overwrites the docs)')
    c.add_argument('--dry-run', action='store_true', help='check the input, print the plan, exit')
    c.add_argument('--report-only', action='store_true',
                   help='train nothing; write the report from the finished runs')
    c.add_argument('--keep-going', action='store_true',
                   help='continue with the other runs when one fails')
    c.add_argument('--cfg-options', nargs='+', default=[],
                   help='overrides for every run (KEY=VALUE) or one method\'s (METHOD:KEY=VALUE)')
    return p.parse_args(argv)


def _ints(text: str, what: str) -> list:
    try:
        return [int(s) for s in text.split(',') if s.strip()]
    except ValueError:
        raise SystemExit(f'error: {what} must be comma-separated integers, got {text!r}')


def user_spec(args) -> BenchmarkSpec:
    """The benchmark of --data-config with --teacher / --student."""
    from mmkd.benchmark.compose import parse_model_spec, student_pipelines
    from mmkd.benchmark.data import resolve_data
    missing = [f for f, v in (('--teacher', args.teacher), ('--student', args.student)) if not v]
    if not args.teacher_ckpt and not args.train_teacher:
        missing.append('--teacher-ckpt (or --train-teacher)')
    if missing:
        raise SystemExit(f'error: with --data-config, give {", ".join(missing)}')
    if args.preset:
        raise SystemExit('error: --preset is for the built-in data; with --data-config choose '
                         '--methods')
    methods = args.methods.split(',') if args.methods else list(METHOD_PRESETS)
    expand_methods(methods)  # an unknown name stops here, before anything is read or written
    student = parse_model_spec(args.student)
    scale = tuple(_ints(args.img_scale, '--img-scale')) if args.img_scale else None
    if scale is not None and len(scale) != 2:
        raise SystemExit('error: --img-scale is W,H')
    pipelines = student_pipelines(student) if osp.isdir(args.data_config) else None
    data = resolve_data(args.data_config, args.work_dir, pipelines, scale, args.batch_size)
    return BenchmarkSpec(
        data=data, teacher=parse_model_spec(args.teacher), student=student, methods=methods,
        seeds=_ints(args.seeds, '--seeds') if args.seeds else [0], work_dir=args.work_dir,
        epochs=args.epochs, protocol=args.protocol,
        teacher_ckpt=None if args.train_teacher else args.teacher_ckpt,
        teacher_epochs=args.teacher_epochs, student_ckpt=args.student_ckpt,
        student_init_epochs=args.student_init_epochs, cls_teacher=args.cls_teacher,
        cls_teacher_ckpt=args.cls_teacher_ckpt, cls_epochs=args.cls_epochs,
        extra_options=args.cfg_options, auto_balance=args.auto_balance)


def builtin(args, dry: bool) -> BenchmarkSpec:
    """The benchmark of the built-in data (teacher and students of mmkd.benchmark.suite)."""
    preset = PRESETS[args.preset or 'quick']
    if not dry:
        ensure_data(args.data)
    elif not osp.isfile(osp.join(args.data, 'annotations', 'instances_train.json')):
        raise SystemExit(f'error: no data in {args.data} yet (generated on the first real run: '
                         f'python tools/make_synthetic_data.py {args.data})')
    train_ann = osp.join(args.data, 'annotations', 'instances_train.json')
    teacher_ckpt = None
    if args.train_teacher or args.teacher_epochs:
        print('teacher: trained here (--train-teacher / --teacher-epochs)')
    elif args.teacher_ckpt not in (None, 'auto'):
        teacher_ckpt = args.teacher_ckpt
        print(f'teacher: {teacher_ckpt} (--teacher-ckpt)')
    else:
        usable, why = shipped_status(SHIPPED_TEACHER, train_ann, 'teacher')
        teacher_ckpt = SHIPPED_TEACHER if usable else None
        print(f'teacher: {why}' + ('' if usable else '; training one instead'))
    student_ckpt = None
    if args.protocol == 'finetune':
        if args.student_ckpt not in (None, 'auto'):
            student_ckpt = args.student_ckpt
            print(f'converged student: {student_ckpt} (--student-ckpt)')
        else:
            usable, why = shipped_status(SHIPPED_STUDENT, train_ann, 'student')
            student_ckpt = SHIPPED_STUDENT if usable else None
            print(f'converged student: {why}' + ('' if usable else
                  f'; training it first (as {STUDENT_INIT_CONFIG}, cached)'))
    methods = resolve_methods(args.preset or 'quick',
                              args.methods.split(',') if args.methods else None)
    return builtin_spec(
        args.data, methods, _ints(args.seeds, '--seeds') if args.seeds else preset.seeds,
        args.work_dir, args.epochs or preset.epochs, args.protocol, teacher_ckpt,
        args.teacher_epochs, student_ckpt, args.student_init_epochs, args.cls_epochs,
        args.cfg_options, args.auto_balance)


def default_doc(args, builtin: bool) -> str:
    suffix = '' if args.protocol == 'scratch' else f'_{args.protocol}'
    if not builtin:
        return osp.join(args.work_dir, f'report{suffix}.md')
    if args.preset == 'full':
        return 'docs/benchmarks.md'
    return osp.join(args.work_dir, f'report_{args.preset or "quick"}{suffix}.md')


def print_plan(plan, ex) -> None:
    for line in plan.setup:
        print(f'  {line}')
    print(f'methods ({len(plan.methods)} rows): {", ".join(plan.methods) or "none"}')
    for name in plan.methods:
        for note in plan.notes.get(name, []):
            print(f'  {name}: {note}')
    for name, reason in plan.skipped:
        print(f'  SKIPPED {name}: {reason}')
    print(f'{len(plan.runs)} runs, seeds {",".join(map(str, plan.seeds))}, {plan.epochs} '
          f'epochs each (teacher {plan.teacher.epochs}); work dir {short_path(plan.work_dir)}')
    for line in ex.describe():
        print(line)


def main(argv=None) -> int:
    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    is_builtin = not args.data_config
    command = 'python tools/benchmark.py ' + ' '.join(
        shlex.quote(a) for a in argv if a not in ('--report-only', '--dry-run'))
    from mmkd.utils.checkpoint import CheckpointError
    try:
        spec = builtin(args, args.dry_run or args.report_only) if is_builtin else \
            user_spec(args)
        preset = args.preset or 'quick'
        what = (f'{args.data_config}' if not is_builtin else f'preset {preset}' if args.methods
                else f'preset {preset} ({PRESETS[preset].description})')
        print(f'mmkd benchmark, {what}, protocol {args.protocol}; checking the input and '
              'planning...')
        plan = build_plan(spec)
    except (ValueError, TypeError, FileNotFoundError, CheckpointError, KeyError) as exc:
        raise SystemExit(f'error: {exc}')
    if args.doc is None:
        args.doc = default_doc(args, is_builtin)
    ex = Executor(plan, keep_going=args.keep_going, jobs=args.jobs or default_jobs())
    print_plan(plan, ex)
    if args.dry_run:
        return 0
    ok = True
    if not args.report_only:
        t0 = time.time()
        ok = ex.run_all()
        print(f'runs finished in {fmt_seconds(time.time() - t0)}'
              + ('' if ok else f'; {len(ex.failed)} failed: '
                 + ', '.join(r.label for r, _ in ex.failed)))
    from mmkd.apis.benchmark import device_name
    body = build_report(plan, command, device_name(), args.doc or None)
    print(body)
    if args.doc:
        print(f'report written to {args.doc}')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
