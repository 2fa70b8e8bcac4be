"""Training-step cost of every distillation method against the plain student, in one process.

    python tools/benchmark_speed.py [--methods feat_kl,pgm,...] [--iters 10] [--warmup 2]
        [--precision fp32|amp|both] [--data data/synthetic] [--doc docs/benchmarks.md]
        [--memory-steps 4]

For each method: the distilled step time over the plain student step time (same batches,
interleaved), the shares of the distilled step taken by the teacher forward and by the
distillation losses, peak memory against the plain student (CUDA: peak allocated; CPU: peak
RSS of each model trained alone in a fresh process), and for PGM+RDM the cost of
its prototype generation per epoch. The markdown table goes into --doc between
<!-- speed:BEGIN --> and <!-- speed:END --> (the rest of the file is kept).
AMP (--precision amp or both) needs a CUDA device.
"""
import argparse
import datetime
import os.path as osp
import shlex
import sys
import traceback
import warnings

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
warnings.filterwarnings('ignore', message='.*pkg_resources.*')

import torch  # noqa: E402

from mmkd.apis.benchmark import device_name  # noqa: E402
from mmkd.benchmark.runs import data_options, load_resolved, split_method_options  # noqa: E402
from mmkd.benchmark.speed import (SpeedResult, measure_cpu_memory, measure_method,  # noqa: E402
                                  memory_section, speed_section, speed_table,
                                  write_memory_section, write_speed_section)
from mmkd.benchmark.suite import DISTILL_METHODS  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog='methods: ' + ', '.join(DISTILL_METHODS))
    p.add_argument('--methods', default=','.join(DISTILL_METHODS),
                   help='comma-separated methods (default: all)')
    p.add_argument('--iters', type=int, default=10, help='timed steps per model')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--precision', choices=['fp32', 'amp', 'both'], default=None,
                   help='default: both on a CUDA device, fp32 on the CPU')
    p.add_argument('--data', default='data/synthetic')
    p.add_argument('--doc', default='docs/benchmarks.md',
                   help='markdown file whose speed section is written ("" for none)')
    p.add_argument('--memory-steps', type=int, default=4,
                   help='CPU only: training steps of the separate peak-memory processes '
                   '(0: skip the memory measurement)')
    p.add_argument('--memory-only', action='store_true',
                   help='CPU: measure only the peak memory (no timing); its table goes into '
                   'the <!-- memory:BEGIN/END --> section of --doc')
    p.add_argument('--cfg-options', nargs='+', default=[], help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    from mmdet.utils import register_all_modules
    register_all_modules()
    methods = [m for m in args.methods.split(',') if m]
    unknown = [m for m in methods if m not in DISTILL_METHODS]
    if unknown:
        raise SystemExit(f'error: unknown method(s) {unknown}; known: {DISTILL_METHODS}')
    if not osp.isfile(osp.join(args.data, 'annotations', 'instances_train.json')):
        raise SystemExit(f'error: no data in {args.data}; generate it with '
                         f'python tools/make_synthetic_data.py {args.data}')
    precision = args.precision or ('both' if torch.cuda.is_available() else 'fp32')
    if precision != 'fp32' and not torch.cuda.is_available():
        raise SystemExit('error: --precision amp/both needs a CUDA device; use fp32 here')
    amps = {'fp32': [False], 'amp': [True], 'both': [False, True]}[precision]
    shared, per_method = split_method_options(args.cfg_options)
    base = data_options(args.data) + shared
    dev = device_name()
    if args.memory_only:
        return memory_only(args, argv, methods, base, per_method, dev)
    print(f'device: {dev}; {len(methods)} method(s); {args.iters} timed steps after '
          f'{args.warmup} warm-up each')
    results = []
    for amp in amps:
        for m in methods:
            opts = base + per_method.get(m, [])
            print(f'[{m}{" AMP" if amp else ""}] timing...', flush=True)
            try:
                r = measure_method(m, opts, args.iters, args.warmup, amp)
                if not torch.cuda.is_available() and args.memory_steps > 0:
                    r.cpu_mem = measure_cpu_memory(m, opts, args.memory_steps)
            except Exception as exc:  # one broken method must not hide the others
                traceback.print_exc()
                r = SpeedResult(m, 'AMP fp16' if amp else 'fp32',
                                error=f'{type(exc).__name__}: {str(exc)[:120]}')
            results.append(r)
            print(speed_table([r]).splitlines()[-1], flush=True)
    batch = load_resolved('configs/synthetic/faster_rcnn_r18w16_fpn_12e_synthetic.py',
                          base).train_dataloader.batch_size
    command = 'python tools/benchmark_speed.py ' + ' '.join(shlex.quote(a) for a in argv)
    body = speed_section(results, command, dev, batch, args.iters, args.warmup,
                         datetime.date.today().isoformat())
    print(body)
    if args.doc:
        write_speed_section(args.doc, body)
        print(f'written to {args.doc} (between <!-- speed:BEGIN/END --> markers)')
    return 1 if any(r.error for r in results) else 0


def memory_only(args, argv, methods, base, per_method, dev) -> int:
    if torch.cuda.is_available():
        raise SystemExit('error: --memory-only is for the CPU; on CUDA the timing run measures '
                         'peak memory itself')
    steps = max(1, args.memory_steps)
    results = []
    for m in methods:
        print(f'[{m}] peak memory...', flush=True)
        r = SpeedResult(m, 'fp32')
        try:
            r.cpu_mem = measure_cpu_memory(m, base + per_method.get(m, []), steps)
        except Exception as exc:  # one broken method must not hide the others
            traceback.print_exc()
            r.error = f'{type(exc).__name__}: {str(exc)[:120]}'
        results.append(r)
    command = 'python tools/benchmark_speed.py ' + ' '.join(shlex.quote(a) for a in argv)
    body = memory_section(results, command, dev, steps, datetime.date.today().isoformat())
    print(body)
    if args.doc:
        write_memory_section(args.doc, body)
        print(f'written to {args.doc} (between <!-- memory:BEGIN/END --> markers)')
    return 1 if any(r.error for r in results) else 0


if __name__ == '__main__':
    sys.exit(main())
