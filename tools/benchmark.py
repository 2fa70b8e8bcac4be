"""Accuracy benchmark of mmkd's distillation methods on the built-in synthetic data.

    python tools/benchmark.py [--preset quick|full] [--methods pgm,cwd] [--seeds 0,1]
        [--epochs N] [--jobs N] [--work-dir work_dirs/benchmark] [--data data/synthetic]
        [--doc docs/benchmarks.md] [--dry-run] [--report-only] [--keep-going]
        [--teacher-ckpt PATH | --train-teacher [--teacher-epochs N]]

Uses the teacher shipped in checkpoints/synthetic/ (trained 36 epochs on the default built-in
data; --train-teacher, another --teacher-epochs or other data train one instead, cached by
config hash under <work-dir>/cache/), trains the plain student and
the student with each method for every seed, each as a fresh tools/train.py process, evaluates
every model on the val split with tools/test.py (COCO box AP), and writes the results table,
an AP bar chart and the loss curves into the section of --doc between
<!-- benchmark:BEGIN --> and <!-- benchmark:END --> (the rest of the file is kept).
Interrupted? Run the same command again: finished runs are skipped, unfinished ones resume
from their last checkpoint. Presets: quick = teacher, student, PGM+RDM (one seed);
full = every method, seeds 0 and 1.
"""
import argparse
import os.path as osp
import shlex
import sys
import time
import warnings

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
warnings.filterwarnings('ignore', message='.*pkg_resources.*')

from mmkd.benchmark.report import build_report  # noqa: E402
from mmkd.benchmark.runs import (Executor, build_plan, default_jobs, ensure_data,  # noqa: E402
                                 fmt_seconds, short_path, shipped_teacher_status)
from mmkd.benchmark.suite import (PRESETS, RUNNABLE, SHIPPED_TEACHER,  # noqa: E402
                                  resolve_methods)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog='methods: ' + ', '.join(
                                    RUNNABLE))
    p.add_argument('--preset', choices=sorted(PRESETS), default='quick')
    p.add_argument('--methods', help='comma-separated methods (default: the preset\'s)')
    p.add_argument('--seeds', help='comma-separated seeds (default: the preset\'s)')
    p.add_argument('--epochs', type=int, help='training length of every model (default: the '
                   'configs\' 12); lr steps at 2/3 and 11/12 of it')
    p.add_argument('--teacher-epochs', type=int,
                   help='train the teacher this long (default: 3 x --epochs); implies '
                   '--train-teacher')
    p.add_argument('--teacher-ckpt', default='auto',
                   help='trained teacher (of the teacher config) to use; "auto" (default): the '
                   'shipped one when it was trained on --data, else train one')
    p.add_argument('--train-teacher', action='store_true',
                   help='train the teacher instead of using a shipped/given checkpoint')
    p.add_argument('--jobs', type=int, default=None,
                   help='runs trained side by side (default: 2 on a CPU with >= 2 cores, '
                   '1 with a GPU); each gets cores/jobs threads')
    p.add_argument('--cls-epochs', type=int,
                   help='epochs of DICOD\'s classifier teacher (default: its config\'s)')
    p.add_argument('--work-dir', default='work_dirs/benchmark')
    p.add_argument('--data', default='data/synthetic',
                   help='synthetic data folder (generated with the defaults when missing)')
    p.add_argument('--doc', default=None,
                   help='markdown file whose benchmark section is written ("" for none); '
                   'default: docs/benchmarks.md for the full preset, else '
                   '<work-dir>/report_<preset>.md (a quick run never overwrites the docs)')
    p.add_argument('--dry-run', action='store_true', help='print the plan and exit')
    p.add_argument('--report-only', action='store_true',
                   help='train nothing; write the report from the finished runs')
    p.add_argument('--keep-going', action='store_true',
                   help='continue with the other runs when one fails')
    # Hidden: extra overrides for every detector run, or for one with a METHOD: prefix (tests
    # shrink images and batches with it).
    p.add_argument('--cfg-options', nargs='+', default=[], help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    preset = PRESETS[args.preset]
    try:
        methods = resolve_methods(args.preset, args.methods.split(',') if args.methods else None)
        seeds = [int(s) for s in args.seeds.split(',')] if args.seeds else list(preset.seeds)
    except ValueError as exc:
        raise SystemExit(f'error: {exc}')
    epochs = args.epochs or preset.epochs
    if args.doc is None:
        args.doc = ('docs/benchmarks.md' if args.preset == 'full'
                    else osp.join(args.work_dir, f'report_{args.preset}.md'))
    command = 'python tools/benchmark.py ' + ' '.join(
        shlex.quote(a) for a in argv if a != '--report-only')
    if not args.report_only and not args.dry_run:
        ensure_data(args.data)
    elif not osp.isfile(osp.join(args.data, 'annotations', 'instances_train.json')):
        print(f'note: no data in {args.data} yet (generated on the first real run)')
    print(f'mmkd benchmark, preset {args.preset} ({preset.description}); planning...')
    teacher_ckpt = None
    if args.train_teacher or args.teacher_epochs:
        print('teacher: trained here (--train-teacher / --teacher-epochs)')
    elif args.teacher_ckpt != 'auto':
        teacher_ckpt = args.teacher_ckpt
        print(f'teacher: {teacher_ckpt} (--teacher-ckpt)')
    else:
        usable, why = shipped_teacher_status(args.data)
        teacher_ckpt = SHIPPED_TEACHER if usable else None
        print(f'teacher: {why}' + ('' if usable else '; training one instead'))
    try:
        plan = build_plan(methods, seeds, epochs, args.work_dir, args.data, args.cfg_options,
                          args.cls_epochs, args.teacher_epochs, teacher_ckpt)
    except FileNotFoundError as exc:
        raise SystemExit(f'error: {exc}')
    ex = Executor(plan, keep_going=args.keep_going, jobs=args.jobs or default_jobs())
    print(f'{len(plan.runs)} runs (teacher, then per seed the plain student and '
          f'{len(methods)} method(s); seeds {",".join(map(str, seeds))}), {plan.epochs} epochs '
          f'each (teacher {plan.teacher.epochs}); work dir {short_path(plan.work_dir)}')
    for line in ex.describe():
        print(line)
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
        print(f'report written to {args.doc} (between <!-- benchmark:BEGIN/END --> markers)')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
