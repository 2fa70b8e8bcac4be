"""Config handling shared by ``tools/train.py`` and ``tools/test.py``."""
from __future__ import annotations

import os
import os.path as osp
from typing import List, Optional

import torch
from mmengine.config import Config, ConfigDict

from ..utils.config import load_model_cfg
from ..utils.paths import resolve_path

#: Hooks every mmkd training run gets (added by tools/train.py when a config lacks them).
DISTILL_HOOKS = ('StudentCheckpointHook', )
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


def add_mmkd_hooks(cfg: Config) -> List[str]:
    """Append the mmkd hooks a config does not already list; returns the names added."""
    hooks = list(cfg.get('custom_hooks', []) or [])
    have = {str(h.get('type', '')).split('.')[-1] for h in hooks}
    wanted = ALL_RUN_HOOKS + (DISTILL_HOOKS if is_distill(cfg) else ())
    added = [h for h in wanted if h not in have]
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


def set_local_rank_env(local_rank: Optional[int]) -> None:
    """torch.distributed.launch passes --local-rank; mmengine reads LOCAL_RANK."""
    if local_rank is not None and 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(local_rank)
