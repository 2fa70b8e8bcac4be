"""Config handling shared by ``tools/train.py`` and ``tools/test.py``."""
from __future__ import annotations

import argparse
import os
import os.path as osp
from typing import List, Optional

import torch
from mmengine.config import Config, ConfigDict, DictAction

from ..utils.config import load_model_cfg
from ..utils.paths import resolve_path

#: Hooks every mmkd training run gets (added by tools/train.py when a config lacks them).
DISTILL_HOOKS = ('StudentCheckpointHook', 'LossBalanceHook')
ALL_RUN_HOOKS = ('EpochSeedHook', )


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """Load a config from a local, checkout-relative or ``mmdet::`` path, apply overrides."""
    cfg = Config.fromfile(resolve_path(path, 'config'))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def is_distill(cfg: Config) -> bool:
    """True when the config's model is an mmkd DistillDetector."""
    return str(cfg.model.get('type', '')).split('.')[-1] == 'DistillDetector'


#: Hooks a distillation loss type needs to work at all (added when the config lacks them).
LOSS_HOOKS = {'RobustDistillingModule': 'PGMHook',
              'InstanceConditionalDistillLoss': 'ICDPriorHook'}


def distill_loss_types(cfg: Config) -> List[str]:
    """Type names of the distillation losses of a DistillDetector config."""
    if not is_distill(cfg):
        return []
    losses = cfg.model.get('distill_losses') or {}
    items = losses.values() if isinstance(losses, dict) else losses
    return [str(l.get('type', '')).split('.')[-1] for l in items]


def add_mmkd_hooks(cfg: Config) -> List[str]:
    """Append the mmkd hooks a config does not already list; returns the names added."""
    hooks = list(cfg.get('custom_hooks', []) or [])
    have = {str(h.get('type', '')).split('.')[-1] for h in hooks}
    wanted = ALL_RUN_HOOKS + (DISTILL_HOOKS if is_distill(cfg) else ()) + tuple(
        LOSS_HOOKS[t] for t in distill_loss_types(cfg) if t in LOSS_HOOKS)
    added = [h for h in dict.fromkeys(wanted) if h not in have]
    cfg.custom_hooks = hooks + [dict(type=h) for h in added]
    return added


def setup_cpu_distributed(cfg: Config, launcher: str) -> bool:
    """Make ``--launcher pytorch`` work without GPUs: gloo backend and a CPU DDP wrapper.

    mmengine 0.10 always calls ``torch.cuda.set_device`` and gives DDP ``device_ids``, both of
    which fail on a CPU-only machine. We initialise the process group ourselves (mmengine then
    skips its own init) and build the wrapper with ``device_ids=None``.
    Returns True when it did so.
    """
    if launcher == 'none' or torch.cuda.is_available():
        return False
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    cfg.setdefault('env_cfg', ConfigDict()).setdefault('dist_cfg', ConfigDict())['backend'] = 'gloo'
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper['device_ids'] = None
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper
    return True


def default_work_dir(config_path: str) -> str:
    """``./work_dirs/<config file stem>``, as mmdet does."""
    return osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def student_model_cfg(cfg: Config) -> ConfigDict:
    """The student model config of a distillation config (the model itself otherwise)."""
    return load_model_cfg(cfg.model.student, 'student') if is_distill(cfg) else cfg.model


def enable_amp(cfg: Config) -> bool:
    """``--amp``: switch the optimizer wrapper to mmengine's AmpOptimWrapper (dynamic loss scale).

    Returns False when the config already uses AMP. mmengine's AMP wrapper needs a GPU; on a
    CPU-only machine this raises at once instead of after the model is built.
    """
    if not torch.cuda.is_available():
        raise RuntimeError('--amp needs a CUDA device (mmengine\'s AmpOptimWrapper does not run '
                           'on the CPU); drop --amp on this machine.')
    ow = cfg.optim_wrapper
    # several optimisers (DistillOptimWrapperConstructor): convert every wrapper, the
    # top-level one (if any) and each value that is a wrapper config
    wrappers = ([ow] if 'optimizer' in ow else []) + [
        v for v in ow.values() if isinstance(v, dict) and 'optimizer' in v]
    todo = [w for w in wrappers if w.get('type', 'OptimWrapper') != 'AmpOptimWrapper']
    for w in todo:
        w['type'] = 'AmpOptimWrapper'
        w['loss_scale'] = 'dynamic'
    return bool(todo)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The flags tools/train.py and tools/test.py share (mmdet 3.x spellings)."""
    parser.add_argument('--work-dir', help='where logs, checkpoints and results go')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. train_cfg.max_epochs=1')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none')
    # torch.distributed.launch passes --local-rank (torch >= 2) or --local_rank (older)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=None)


def config_from_args(args: argparse.Namespace) -> Config:
    """Load ``args.config`` with the common flags applied (LOCAL_RANK, launcher, work dir)."""
    if args.local_rank is not None and 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)  # mmengine reads the variable
    cfg = load_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or default_work_dir(args.config)
    return cfg


def build_runner(cfg: Config):
    """mmengine's Runner, or the config's own ``runner_type``."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
