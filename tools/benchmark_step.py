"""Time a distilled training step against the plain student step, side by side in one run.

    python tools/benchmark_step.py CONFIG [--iters 20] [--warmup 3] [--teacher-ckpt PATH]
        [--cfg-options ...]

Both models are built from the same config (the plain one is the DistillDetector's student,
same weights) and see the same real batches from the config's train dataloader. Steps are
interleaved (plain, distilled, plain, ...) so machine load affects both equally. Prints median
step times, their ratio, and on CUDA the peak memory of each, plus a markdown row for
docs/benchmarks.md.
"""
import argparse
import copy
import os.path as osp
import statistics
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

import mmkd  # noqa: E402,F401
from mmkd.apis import is_distill, load_config  # noqa: E402
from mmkd.apis.benchmark import device_name, real_batches, timed_train_step  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('--iters', type=int, default=20)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--teacher-ckpt', help='override model.teacher_ckpt (random teacher if none)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = p.parse_args()
    register_all_modules()
    cfg = load_config(args.config, args.cfg_options)
    if not is_distill(cfg):
        raise SystemExit('benchmark_step.py needs a DistillDetector config')
    cfg.model.teacher_ckpt = args.teacher_ckpt
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    torch.manual_seed(0)
    kd = MODELS.build(cfg.model).to(device).train()
    plain = copy.deepcopy(kd.student).to(device).train()
    opt_kd = torch.optim.SGD(kd.parameters(), lr=1e-4, momentum=0.9)
    opt_plain = torch.optim.SGD(plain.parameters(), lr=1e-4, momentum=0.9)
    batches = real_batches(cfg.train_dataloader, args.warmup + args.iters)
    times = {'plain': [], 'distilled': []}
    mem = {}
    for i, batch in enumerate(batches):
        for name, model, opt in (('plain', plain, opt_plain), ('distilled', kd, opt_kd)):
            if device == 'cuda':
                torch.cuda.reset_peak_memory_stats()
            t = timed_train_step(model, opt, batch)
            if i >= args.warmup:
                times[name].append(t)
                if device == 'cuda':
                    mem[name] = max(mem.get(name, 0), torch.cuda.max_memory_allocated() / 2**20)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med['distilled'] / med['plain']
    dev = device_name()
    bs = cfg.train_dataloader.batch_size
    print(f'command: python tools/benchmark_step.py {" ".join(sys.argv[1:])}')
    print(f'device: {dev}; batch size {bs}; {args.iters} timed steps after {args.warmup} warm-up')
    print(f'plain student step: median {med["plain"] * 1000:.1f} ms')
    print(f'distilled step:     median {med["distilled"] * 1000:.1f} ms')
    print(f'ratio distilled/plain: {ratio:.2f}x')
    mem_txt = ''
    if mem:
        print(f'peak memory: plain {mem["plain"]:.0f} MiB, distilled {mem["distilled"]:.0f} MiB '
              f'({mem["distilled"] / mem["plain"]:.2f}x)')
        mem_txt = f' | {mem["plain"]:.0f} / {mem["distilled"]:.0f} MiB'
    print('markdown row:')
    print(f'| `{args.config}` | {dev} | {bs} | {med["plain"] * 1000:.0f} | '
          f'{med["distilled"] * 1000:.0f} | {ratio:.2f}x{mem_txt} |')


if __name__ == '__main__':
    main()
