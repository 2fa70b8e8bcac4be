"""Train a detector or an mmkd DistillDetector (mmdet 3.x flags).

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--resume [CKPT]] [--cfg-options ...]
    bash tools/dist_train.sh CONFIG NUM_PROCS [same flags]
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

import mmkd  # noqa: E402,F401  registers mmkd into mmdet's registries
from mmengine.logging import print_log  # noqa: E402

from mmkd.apis import (add_common_args, add_mmkd_hooks, build_runner,  # noqa: E402
                       config_from_args, enable_amp, setup_cpu_distributed)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Train a detector with mmkd')
    p.add_argument('config', help='config path (local, relative to the mmkd checkout, or mmdet::)')
    p.add_argument('--amp', action='store_true', help='automatic mixed precision')
    p.add_argument('--auto-scale-lr', action='store_true',
                   help='scale the lr by the actual batch size over auto_scale_lr.base_batch_size')
    p.add_argument('--resume', nargs='?', type=str, const='auto',
                   help='resume from CKPT, or from the latest checkpoint in the work dir when '
                   'no path is given')
    add_common_args(p)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    cfg = config_from_args(args)

    if args.amp and not enable_amp(cfg):
        print_log('AMP is already enabled in the config', logger='current')
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

    build_runner(cfg).train()


if __name__ == '__main__':
    main()
