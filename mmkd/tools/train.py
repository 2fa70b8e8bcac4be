"""Train a detector or an mmkd DistillDetector (mmdet 3.x flags).

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--resume [CKPT]] [--cfg-options ...]
    bash tools/dist_train.sh CONFIG NUM_PROCS [same flags]
    python -m mmkd.tools.train CONFIG [same flags]       (after pip install; or mmkd-train)
    python -m mmkd.tools.dist_train CONFIG NUM_PROCS [same flags]
"""
import argparse
import os

from mmkd.utils.tool_warnings import quiet_known_warnings  # noqa: E402

quiet_known_warnings()
from mmengine.logging import print_log  # noqa: E402

import mmkd  # noqa: E402,F401  registers mmkd into mmdet's registries
from mmkd.apis import (add_common_args, add_mmkd_hooks, build_runner,  # noqa: E402
                       close_distributed, config_from_args, enable_amp, preflight_train,
                       setup_cpu_distributed, setup_resume)
from mmkd.utils.faults import ENV as FAULT_ENV  # noqa: E402


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
    resume = setup_resume(cfg, args.resume)

    added = add_mmkd_hooks(cfg)
    if added:
        print_log(f'mmkd: added hooks {added}', logger='current')
    if os.environ.get(FAULT_ENV):  # test-only kill points, see mmkd/utils/faults.py
        cfg.custom_hooks = list(cfg.custom_hooks) + [dict(type='FaultInjectionHook')]
    if setup_cpu_distributed(cfg, args.launcher):
        print_log('mmkd: no CUDA device, distributed training on the gloo backend',
                  logger='current')

    runner = build_runner(cfg)
    ok = False
    try:
        # up front: strict resume check, empty data sets, teacher classes, boxes mmdet drops
        preflight_train(runner, resume)
        runner.train()
        ok = True
    finally:
        del runner  # drop the DDP wrapper before the process group goes
        close_distributed(ok)


if __name__ == '__main__':
    main()
