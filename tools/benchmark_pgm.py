"""Cost of Global-Knowledge distillation on a config, both PGM modes, in one run.

    python tools/benchmark_pgm.py CONFIG [--teacher-ckpt PATH] [--iters 15] [--warmup 3]
        [--cfg-options ...]

Measures, side by side on the same real batches (steps interleaved: plain, offline-mode,
online-mode, ...):
  * the plain student step, the distilled step with pgm.mode='offline' and with 'online'
    (the online step also writes the memory bank);
  * the offline PGM pass (PGMHook) before an epoch: the first one (teacher and student
    forward) and a later one (teacher descriptors cached);
  * the online refresh from a full memory bank;
and reports each PGM mode's cost as a fraction of a distilled epoch
(iterations per epoch = the length of the config's train dataloader).
"""
import argparse
import copy
import os.path as osp
import statistics
import sys
import time
from types import SimpleNamespace

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402
from mmengine.config import DictAction  # noqa: E402
from mmengine.logging import MessageHub  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmkd  # noqa: E402,F401
from mmkd.apis import load_config  # noqa: E402
from mmkd.apis.benchmark import device_name, real_batches, timed_train_step  # noqa: E402
from mmkd.models.methods.global_knowledge import PGMHook, RobustDistillingModule  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('--teacher-ckpt')
    p.add_argument('--iters', type=int, default=15)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = p.parse_args()
    register_all_modules()
    cfg = load_config(args.config, args.cfg_options)
    cfg.model.teacher_ckpt = args.teacher_ckpt
    name = next(n for n, l in cfg.model.distill_losses.items()
                if l['type'] == 'RobustDistillingModule')
    hook_cfg = next((h for h in cfg.get('custom_hooks', []) if h['type'] == 'PGMHook'), {})
    iters_per_epoch = len(Runner.build_dataloader(cfg.train_dataloader, seed=0))
    hub = MessageHub.get_current_instance()
    hub.update_info('epoch', 0)
    hub.update_info('max_epochs', cfg.train_cfg.get('max_epochs', 12))

    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    models = {}
    for mode in ('offline', 'online'):
        c = copy.deepcopy(cfg.model)
        c.distill_losses[name].pgm.mode = mode
        torch.manual_seed(0)
        models[mode] = MODELS.build(c).to(device).train()
    models['plain'] = copy.deepcopy(models['offline'].student)
    loss_off: RobustDistillingModule = models['offline'].distill_losses[name]
    loss_on: RobustDistillingModule = models['online'].distill_losses[name]

    hook = PGMHook(batch_size=hook_cfg.get('batch_size', 4))
    runner_like = SimpleNamespace(cfg=cfg)
    t0 = time.perf_counter()
    desc = hook.collect(runner_like, models['offline'], loss_off)
    loss_off.generate_prototypes(*desc)
    first_pass = time.perf_counter() - t0
    t0 = time.perf_counter()
    loss_off.generate_prototypes(*hook.collect(runner_like, models['offline'], loss_off))
    later_pass = time.perf_counter() - t0
    n_inst = int(desc[2][0].shape[0])

    loss_on._bank_push(*desc[:2], desc[2][0])  # a full bank, as at the end of an epoch
    loss_on.train()
    t0 = time.perf_counter()
    loss_on.refresh_from_bank()
    refresh = time.perf_counter() - t0

    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9) for k, m in models.items()}
    times = {k: [] for k in models}
    for i, batch in enumerate(real_batches(cfg.train_dataloader, args.warmup + args.iters)):
        for k in ('plain', 'offline', 'online'):
            t = timed_train_step(models[k], opts[k], batch)
            if i >= args.warmup:
                times[k].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    epoch_off = iters_per_epoch * med['offline']
    epoch_on = iters_per_epoch * med['online']
    online_extra = iters_per_epoch * max(0.0, med['online'] - med['offline']) + refresh

    print(f'command: python tools/benchmark_pgm.py {" ".join(sys.argv[1:])}')
    print(f'device: {device_name()}; batch {cfg.train_dataloader.batch_size}; '
          f'{iters_per_epoch} iterations per epoch; {args.iters} timed steps after '
          f'{args.warmup} warm-up')
    print(f'plain student step      {med["plain"] * 1e3:7.1f} ms')
    print(f'GK step, offline PGM    {med["offline"] * 1e3:7.1f} ms  '
          f'({med["offline"] / med["plain"]:.2f}x plain)')
    print(f'GK step, online PGM     {med["online"] * 1e3:7.1f} ms  '
          f'({med["online"] / med["plain"]:.2f}x plain; includes the bank update)')
    print(f'offline PGM pass: first epoch {first_pass:.1f} s, later epochs {later_pass:.1f} s '
          f'({n_inst} instances); later-epoch share of a distilled epoch: '
          f'{later_pass / (later_pass + epoch_off):.1%} (first: '
          f'{first_pass / (first_pass + epoch_off):.1%})')
    print(f'online PGM: refresh from a full bank {refresh:.2f} s; bank updates + refresh share '
          f'of a distilled epoch: {online_extra / (epoch_on + refresh):.1%}')


if __name__ == '__main__':
    main()
