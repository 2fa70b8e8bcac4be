"""Train a detector or an mmkd DistillDetector (mmdet 3.x flags).

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--resume [CKPT]] [--cfg-options ...]
    bash tools/dist_train.sh CONFIG NUM_PROCS [same flags]
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

import mmkd  # noqa: E402,F401  registers mmkd into mmdet's registries
from mmengine.config import DictAction  # noqa: E402
from mmengine.logging import print_log  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from mmkd.apis import (add_mmkd_hooks, default_work_dir, load_config,  # noqa: E402
                       set_local_rank_env, setup_cpu_distributed)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Train a detector with mmkd')
    p.add_argument('config', help='config path (local, relative to the mmkd checkout, or mmdet::)')
    p.add_argument('--work-dir', help='where logs and checkpoints go')
    p.add_argument('--amp', action='store_true', help='automatic mixed precision')
    p.add_argument('--auto-scale-lr', action='store_true',
                   help='scale the lr by the actual batch size over auto_scale_lr.base_batch_size')
    p.add_argument('--resume', nargs='?', type=str, const='auto',
                   help='resume from CKPT, or from the latest checkpoint in the work dir when '
                   'no path is given')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config entries, e.g. train_cfg.max_epochs=1')
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    p.add_argument('--local_rank', '--local-rank', type=int, default=None)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    set_local_rank_env(args.local_rank)
    cfg = load_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or default_work_dir(args.config)

    if args.amp:
        if cfg.optim_wrapper.get('type', 'OptimWrapper') == 'AmpOptimWrapper':
            print_log('AMP is already enabled in the config', logger='current')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise ValueError('--auto-scale-lr needs auto_scale_lr.base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume

    added = add_mmkd_hooks(cfg)
    if added:
        print_log(f'mmkd: added hooks {added}', logger='current')
    if setup_cpu_distributed(cfg, args.launcher):
        print_log('mmkd: no CUDA device, distributed training on the gloo backend',
                  logger='current')

    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()


if __name__ == '__main__':
    main()
