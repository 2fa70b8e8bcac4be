"""Training-step cost of every distillation method against the plain student, in one process.

    python tools/benchmark_speed.py [--methods feat_kl,pgm,...] [--iters 10] [--warmup 2]
        [--precision fp32|amp|both] [--data data/synthetic] [--doc docs/benchmarks.md]
        [--memory-steps 4]
    python tools/benchmark_speed.py --coco [--pairs faster_rcnn,retinanet] [--methods pgm,...]
        [--size 1333x800] [--images 2] [--precision amp] [--iters 8] [--warmup 3] [--profile]
        [--device cuda|cpu] [--time-limit S] [--out-md F] [--out-json F]

For each method: the distilled step time over the plain student step time (same batches,
interleaved), the shares of the distilled step taken by the teacher forward and by the
distillation losses, peak memory against the plain student (CUDA: peak allocated; CPU: peak
RSS of each model trained alone in a fresh process), and for PGM+RDM the cost of
its prototype generation per epoch. The markdown table goes into --doc between
<!-- speed:BEGIN --> and <!-- speed:END --> (the rest of the file is kept).
AMP (--precision amp or both) needs a CUDA device.

--coco measures the COCO configs of the Faster R-CNN and RetinaNet R101->R50 pairs at COCO size
(default 2 images of 1333x800, AMP) on a GPU: every method's distilled step over the plain
student step, the teacher forward, the time beyond it, and peak CUDA memory plain vs distilled,
checked against the targets (mmkd/benchmark/speed.py: GK <= 1.5x the plain step; at most 10 % of
the plain step beyond the teacher forward; peak memory <= plain + teacher weights + 15 %).
Random weights and a synthetic batch: nothing is downloaded. With --profile a torch.profiler
table is printed for each method that misses a target. The table goes into --doc between
<!-- gpu-speed:BEGIN/END --> (and --out-md / --out-json). Exit status: 0 every target met,
3 some missed, 1 a method failed. --device cpu --precision fp32 --size 128x96 is a quick smoke
test of the same code on a CPU (no memory numbers).
"""
import argparse
import datetime
import os.path as osp
import platform
import shlex
import sys
import traceback
import warnings

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
warnings.filterwarnings('ignore', message='.*pkg_resources.*')

import torch  # noqa: E402

from mmkd.apis.benchmark import device_name  # noqa: E402
from mmkd.benchmark.runs import data_options, load_resolved, split_method_options  # noqa: E402
from mmkd.benchmark.speed import (COCO_PAIRS, CocoSpeedResult, SpeedResult,  # noqa: E402
                                  coco_methods, coco_speed_section, coco_speed_table,
                                  measure_coco_method, measure_cpu_memory, measure_method,
                                  memory_section, speed_section, speed_table,
                                  write_gpu_speed_section, write_memory_section,
                                  write_speed_section)
from mmkd.benchmark.suite import DISTILL_METHODS  # noqa: E402
from mmkd.utils.atomic import atomic_write  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog='methods: ' + ', '.join(DISTILL_METHODS))
    p.add_argument('--methods', default=None,
                   help='comma-separated methods (default: all); with --coco, names of the '
                   'configs/kd/<pair>_r101_r50_<name>.py files, or pair:name')
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
    c = p.add_argument_group('COCO size on a GPU (--coco)')
    c.add_argument('--coco', action='store_true',
                   help='the COCO configs of the R101->R50 pairs at COCO size (GPU)')
    c.add_argument('--pairs', default=','.join(COCO_PAIRS),
                   help=f'comma-separated, of {", ".join(COCO_PAIRS)}')
    c.add_argument('--size', default='1333x800', help='image width x height')
    c.add_argument('--images', type=int, default=2, help='images per step')
    c.add_argument('--device', choices=['cuda', 'cpu'], default=None,
                   help='default: cuda when available')
    c.add_argument('--profile', action='store_true',
                   help='torch.profiler table of each method that misses a target')
    c.add_argument('--time-limit', type=float, default=None,
                   help='seconds; start no method that would end after it (the rest are '
                   'listed as not measured)')
    c.add_argument('--out-md', default='', help='also write the markdown section here')
    c.add_argument('--out-json', default='', help='write every number here')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    from mmdet.utils import register_all_modules
    register_all_modules()
    if args.coco:
        return coco_main(args, argv)
    methods = [m for m in (args.methods or ','.join(DISTILL_METHODS)).split(',') if m]
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


def _coco_plan(args) -> list:
    """(pair, method, config, options) rows to measure, in order; names checked."""
    pairs = [p for p in args.pairs.split(',') if p]
    unknown = [p for p in pairs if p not in COCO_PAIRS]
    if unknown:
        raise SystemExit(f'error: unknown pair(s) {unknown}; known: {", ".join(COCO_PAIRS)}')
    wanted = [m for m in (args.methods or '').split(',') if m]
    plan, found, every = [], set(), {}
    for pair in pairs:
        every[pair] = [r[0] for r in coco_methods(pair, everything=True)]
        if not wanted:
            plan += [(pair, *row) for row in coco_methods(pair)]
            continue
        names = []
        for w in wanted:
            where, _, name = w.rpartition(':')
            if where in ('', pair) and name in every[pair]:
                names.append(name)
                found.add(w)
        plan += [(pair, *row) for row in coco_methods(pair, names)] if names else []
    missing = [w for w in wanted if w not in found]
    if missing:
        raise SystemExit(f'error: no config for {missing} in the pairs {pairs}; known: ' +
                         ', '.join(f'{p}:{n}' for p in pairs for n in every[p]))
    return plan


def coco_main(args, argv) -> int:
    import json
    import time
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('error: --device cuda but torch sees no CUDA device')
    precision = args.precision or ('amp' if device == 'cuda' else 'fp32')
    if precision == 'both':
        raise SystemExit('error: --coco measures one precision at a time: --precision amp or fp32')
    if precision == 'amp' and device != 'cuda':
        raise SystemExit('error: --precision amp needs a CUDA device; use --precision fp32 with '
                         '--device cpu')
    try:
        w, h = (int(v) for v in args.size.lower().split('x'))
    except ValueError:
        raise SystemExit(f'error: --size {args.size!r}: write WIDTHxHEIGHT, e.g. 1333x800')
    plan = _coco_plan(args)
    dev = (device_name() if device == 'cuda' else
           f'CPU ({platform.machine()}, {torch.get_num_threads()} threads)')
    if device == 'cuda':
        torch.backends.cudnn.benchmark = False  # the same kernels for plain and distilled
    print(f'device: {dev}; {len(plan)} method(s) at {w}x{h}, {args.images} images, '
          f'{precision}; {args.iters} timed steps after {args.warmup} warm-up each', flush=True)
    results, t0, slowest = [], time.perf_counter(), 0.0
    for i, (pair, method, config, options) in enumerate(plan):
        spent = time.perf_counter() - t0
        # profiling (3 more steps) only while every method left still fits the time limit
        profile = args.profile and (not args.time_limit or not results or spent + (
            len(plan) - i) * 1.3 * slowest < args.time_limit)
        if args.time_limit and spent + 1.2 * slowest > args.time_limit:
            results.append(CocoSpeedResult(pair, method, config, error='not measured: time limit'))
            print(f'[{pair} {method}] skipped: the time limit ({args.time_limit:.0f}s) would be '
                  'passed', flush=True)
            continue
        print(f'[{pair} {method}] {config} {" ".join(options)}', flush=True)
        try:
            r = measure_coco_method(pair, method, config, options, args.iters, args.warmup,
                                    precision == 'amp', (h, w), args.images, device,
                                    profile)
        except Exception as exc:  # one broken method must not hide the others
            traceback.print_exc()
            r = CocoSpeedResult(pair, method, config,
                                error=f'failed: {type(exc).__name__}: {str(exc)[:150]}')
            if device == 'cuda':
                torch.cuda.empty_cache()
        slowest = max(slowest, r.seconds)
        results.append(r)
        print(coco_speed_table([r]).splitlines()[-1], flush=True)
        if r.profile:
            print(f'torch.profiler, 3 distilled steps of {pair} {method} (missed: '
                  f'{", ".join(r.missed)}):\n{r.profile}', flush=True)
        elif args.profile and r.missed:
            print(f'{pair} {method}: not profiled, to keep within --time-limit', flush=True)
    command = 'python tools/benchmark_speed.py ' + ' '.join(shlex.quote(a) for a in argv)
    body = coco_speed_section(results, command, dev, (h, w), args.images, args.iters,
                              args.warmup, datetime.date.today().isoformat())
    print(body)
    if args.doc:
        write_gpu_speed_section(args.doc, body)
        print(f'written to {args.doc} (between <!-- gpu-speed:BEGIN/END --> markers)')
    if args.out_md:
        with atomic_write(args.out_md) as f:
            f.write(body)
    if args.out_json:
        rows = [dict(vars(r), ratio=None if r.error else r.ratio, targets=r.targets(),
                     mem_limit_mib=r.mem_limit_mib) for r in results]
        with atomic_write(args.out_json) as f:
            json.dump(dict(device=dev, command=command, size=[w, h], images=args.images,
                           precision=precision, iters=args.iters, warmup=args.warmup,
                           results=rows), f, indent=1, default=str)
    if any(r.error for r in results):
        return 1
    return 3 if any(r.missed for r in results) else 0


if __name__ == '__main__':
    sys.exit(main())
