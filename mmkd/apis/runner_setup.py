"""Config handling and up-front checks shared by ``tools/train.py`` and ``tools/test.py``."""
from __future__ import annotations

import argparse
import json
import math
import os
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from ..utils.checkpoint import check_resume_checkpoint, load_checkpoint_file
from ..utils.config import check_option_keys, load_model_cfg
from ..utils.paths import resolve_path

#: Hooks every mmkd training run gets (added by tools/train.py when a config lacks them).
DISTILL_HOOKS = ('StudentCheckpointHook', 'LossBalanceHook')
ALL_RUN_HOOKS = ('EpochSeedHook', )


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """Load a config from a local, checkout-relative or ``mmdet::`` path, apply overrides."""
    cfg = Config.fromfile(resolve_path(path, 'config'))
    if cfg_options:
        check_option_keys(cfg, cfg_options)  # a misspelt top-level key is an error, not a no-op
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


def close_distributed(ok: bool = True) -> None:
    """Tear the process group down before the interpreter exits (tools call it last, after
    dropping their runner).

    Without this, the gloo process group (kept alive by the DDP wrapper's reducer even after
    ``destroy_process_group``) is destructed during interpreter shutdown, and its worker threads
    race that teardown: rank processes then die with "terminate called without an active
    exception" (SIGABRT) after finishing their work, which makes the launcher report a failure.
    So: collect the dropped runner (the DDP wrapper and its reference to the group), wait for
    every rank (only when all ended normally: a failed rank would never arrive), destroy the
    group.
    """
    import gc

    import torch.distributed as dist
    gc.collect()
    if not (dist.is_available() and dist.is_initialized()):
        return
    if ok:
        dist.barrier()
    rank = dist.get_rank()
    dist.destroy_process_group()
    gc.collect()
    print(f'mmkd: process group closed (rank {rank})', flush=True)  # every rank, not only 0


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
    """mmengine's Runner with atomic checkpoint files (:class:`AtomicSaveRunner`), or the
    config's own ``runner_type``."""
    from mmengine.registry import RUNNERS

    from ..utils.tool_warnings import quiet_known_log_messages
    from .atomic_runner import AtomicSaveRunner
    runner = AtomicSaveRunner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    quiet_known_log_messages(runner.logger)  # mmengine's own deprecation notices
    from ..models.utils.dense_head_compat import add_missing_loss_cls
    add_missing_loss_cls(runner.model)  # SSD heads predict under mmdet 3.3 (mmdet #11780)
    return runner


# ---- --resume ----------------------------------------------------------------------------------
def latest_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint mmengine's ``last_checkpoint`` file in ``work_dir`` names, or None."""
    marker = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(marker):
        return None
    with open(marker) as f:
        return f.read().strip() or None


def setup_resume(cfg: Config, resume: Optional[str]) -> Optional[Tuple[str, bool]]:
    """Apply ``--resume [PATH]`` to ``cfg``; returns ``(path, found_automatically)`` for
    :func:`check_resume`, or None when there is nothing to resume.

    ``'auto'`` (``--resume`` without a path) takes the newest checkpoint of the work dir (its
    ``last_checkpoint`` file, as mmengine does); with none, training starts from the beginning
    and the log says so.
    """
    if resume is None:
        return None
    if resume == 'auto':
        path = latest_checkpoint(cfg.work_dir)
        cfg.resume, cfg.load_from = True, path
        if path is None:
            print_log(f'mmkd: --resume: no checkpoint in {cfg.work_dir} yet (no last_checkpoint '
                      'file); training starts from the beginning', logger='current')
            return None
        return path, True
    cfg.resume, cfg.load_from = True, resume
    return resume, False


def unwrap(model):
    """The model inside a DDP-style wrapper."""
    return model.module if is_model_wrapper(model) else model


def check_resume(runner, resume: Optional[Tuple[str, bool]]) -> None:
    """Strict up-front check of the checkpoint to resume from (keys, shapes, kind of file;
    :func:`~mmkd.utils.checkpoint.check_resume_checkpoint`)."""
    if resume is None:
        return
    path, auto = resume
    check_resume_checkpoint(unwrap(runner.model), path,
                            work_dir=runner.work_dir if auto else None)
    print_log(f'mmkd: resume checkpoint {path} matches the model (strict check of every key '
              'and shape)', logger='current')


# ---- data set checks ---------------------------------------------------------------------------
def _describe_dataset(dataset) -> str:
    inner = _innermost(dataset)
    parts = [type(inner).__name__]
    for attr in ('ann_file', 'data_root'):
        value = getattr(inner, attr, None)
        if value:
            parts.append(f'{attr}={value!r}')
    return ', '.join(parts)


def _innermost(dataset):
    """Unwrap RepeatDataset / ClassBalancedDataset / ConcatDataset (first part) wrappers."""
    while True:
        if hasattr(dataset, 'dataset'):
            dataset = dataset.dataset
        elif getattr(dataset, 'datasets', None):
            dataset = dataset.datasets[0]
        else:
            return dataset


def check_datasets_not_empty(runner, splits: Sequence[str]) -> None:
    """Raise ValueError naming the data set and the fix when a used split has no images.

    ``splits``: among ``'train'``, ``'val'`` (checked only when validation is configured) and
    ``'test'``. mmengine would otherwise fail late (an empty validation set only after the
    first epoch, with "need at least one array to concatenate").
    """
    for split in splits:
        if split == 'val' and getattr(runner, '_val_loop', None) is None:
            continue
        try:
            dataset = getattr(runner, f'{split}_dataloader').dataset
            where = _describe_dataset(dataset)
            if len(dataset) > 0:
                continue
        except ValueError as exc:  # mmengine's serialisation of an empty list of images
            if 'need at least one array to concatenate' not in str(exc):
                raise
            ds_cfg = _innermost_cfg(runner.cfg[f'{split}_dataloader'].dataset)
            where = ', '.join([str(ds_cfg.get('type'))] + [
                f'{k}={ds_cfg[k]!r}' for k in ('ann_file', 'data_root') if ds_cfg.get(k)])
        fix = {'train': 'check the paths; note that filter_cfg=dict(filter_empty_gt=True) drops '
                        'images without boxes',
               'val': 'check the paths, or train without validation: --cfg-options '
                      'val_cfg=None val_dataloader=None val_evaluator=None',
               'test': 'check the paths of test_dataloader'}[split]
        raise ValueError(f'the {split} set is empty: {split}_dataloader.dataset '
                         f'({where}) has no images. Fix: {fix}.') from None


def _innermost_cfg(cfg: dict) -> dict:
    """The innermost dataset config of RepeatDataset / ClassBalancedDataset wrappers."""
    while 'dataset' in cfg and 'ann_file' not in cfg:
        cfg = cfg['dataset']
    return cfg


def dataset_classes(dataset) -> Optional[List[str]]:
    """The class names of a built data set (``metainfo['classes']``), or None."""
    meta = getattr(dataset, 'metainfo', None) or {}
    classes = meta.get('classes')
    return [str(c) for c in classes] if classes is not None else None


def check_checkpoint_classes(model, classes: Optional[Sequence[str]]) -> None:
    """Raise ValueError when the teacher's (or ``student_ckpt``'s) checkpoint records class
    names that differ from the data set's, in names or in order; both lists are shown."""
    if classes is None:
        return
    for role in ('teacher', 'student'):
        meta = getattr(model, f'{role}_ckpt_meta', None) or {}
        ckpt_classes = (meta.get('dataset_meta') or {}).get('classes')
        if ckpt_classes is None:
            continue
        theirs, ours = [str(c) for c in ckpt_classes], list(classes)
        if theirs == ours:
            continue
        path = getattr(model, f'{role}_ckpt', None) or f'the {role} checkpoint'
        if sorted(theirs) == sorted(ours):
            what = 'the same names in another order'
        else:
            only_t = sorted(set(theirs) - set(ours))
            only_d = sorted(set(ours) - set(theirs))
            what = (f'different names (only the checkpoint has {only_t}, only the data set has '
                    f'{only_d})')
        msg = (f"{role} checkpoint '{path}' was trained on classes {theirs} but the training "
               f'data set has {ours}: {what}. Its class outputs would be matched to the wrong '
               f'classes. Use a {role} trained on this data set (same classes, same order), or '
               "give the data set the checkpoint's classes in its order (dataset "
               'metainfo=dict(classes=...)).')
        losses = getattr(model, 'distill_losses', None) or {}
        if role == 'teacher' and losses and not any(
                getattr(l, 'requires_same_classes', True) for l in losses.values()):
            # no loss compares class-wise outputs (e.g. features only, declared so)
            print_log(f'mmkd: {msg} No distillation loss here compares class outputs, so '
                      'training goes on.', logger='current', level=30)
            continue
        raise ValueError(msg)


def count_dropped_boxes(dataset) -> Optional[Dict[str, Any]]:
    """How many boxes of a COCO-style annotation file mmdet's CocoDataset drops silently.

    Mirrors ``CocoDataset.parse_data_info``: a box is dropped when its width or height is
    below 1 or its area is not positive (zero, negative), when a coordinate is not finite (NaN,
    inf), or when it lies entirely outside its image. Boxes of categories outside the data
    set's classes are filtered on purpose and not counted. Returns None for other data sets.
    """
    inner = _innermost(dataset)
    ann_file, cat_ids = getattr(inner, 'ann_file', None), getattr(inner, 'cat_ids', None)
    if not ann_file or cat_ids is None or not str(ann_file).endswith('.json') or \
            not osp.isfile(ann_file):
        return None
    with open(ann_file) as f:
        data = json.load(f)
    images = {img['id']: img for img in data.get('images', [])}
    cats = set(cat_ids)
    counts = dict(total=0, dropped=0, small=0, non_finite=0, outside=0, examples=[])
    for ann in data.get('annotations', []):
        if ann.get('ignore', False) or ann.get('category_id') not in cats:
            continue
        counts['total'] += 1
        img = images.get(ann.get('image_id'), {})
        x1, y1, w, h = (float(v) for v in ann['bbox'])
        if not all(math.isfinite(v) for v in (x1, y1, w, h)):
            reason = 'non_finite'
        elif w < 1 or h < 1 or float(ann.get('area', w * h)) <= 0:
            reason = 'small'
        elif (min(x1 + w, img.get('width', math.inf)) - max(x1, 0)) <= 0 or \
                (min(y1 + h, img.get('height', math.inf)) - max(y1, 0)) <= 0:
            reason = 'outside'
        else:
            continue
        counts['dropped'] += 1
        counts[reason] += 1
        if len(counts['examples']) < 3:
            counts['examples'].append(f"id {ann.get('id')} (image {ann.get('image_id')}, bbox "
                                      f"{ann['bbox']})")
    return counts


def log_dropped_boxes(dataset, split: str = 'train') -> Optional[Dict[str, Any]]:
    """Log (warning) the boxes :func:`count_dropped_boxes` finds; returns the counts."""
    counts = count_dropped_boxes(dataset)
    if counts and counts['dropped']:
        print_log(
            f"mmkd: {counts['dropped']} of {counts['total']} boxes in the {split} annotations "
            f'({_innermost(dataset).ann_file}) are dropped by mmdet when loading: '
            f"{counts['small']} with width or height below 1 px or a non-positive area, "
            f"{counts['non_finite']} with NaN/inf coordinates, {counts['outside']} entirely "
            f"outside their image. Examples: {'; '.join(counts['examples'])}. Fix the "
            'annotations if these objects matter.', logger='current', level=30)
    return counts


def preflight_train(runner, resume: Optional[Tuple[str, bool]] = None) -> None:
    """Checks before any training step: the resume checkpoint (strict), a ``load_from`` file
    that loads, non-empty train and validation sets, the teacher's classes against the data
    set's, and a count of the boxes mmdet drops silently."""
    check_resume(runner, resume)
    load_from = getattr(runner, '_load_from', None)
    if resume is None and load_from and not getattr(runner, '_resume', False):
        # mmengine loads load_from itself (non-strictly, as mmdet's fine-tuning recipes
        # expect); a broken file still gets mmkd's message naming it
        load_checkpoint_file(load_from, 'load_from', mmap=True)
    check_datasets_not_empty(runner, ('train', 'val'))
    model = unwrap(runner.model)
    check_checkpoint_classes(model, dataset_classes(runner.train_dataloader.dataset))
    from mmengine.dist import is_main_process
    if is_main_process():
        log_dropped_boxes(runner.train_dataloader.dataset)


def check_eval_metrics(runner, metrics: Sequence[str]) -> None:
    """Raise ValueError before inference when ``segm`` is asked of a model without masks."""
    if 'segm' in metrics and not getattr(unwrap(runner.model), 'with_mask', False):
        raise ValueError(f"--eval segm: {type(unwrap(runner.model)).__name__} predicts boxes "
                         'only (the config has no mask head), so there are no masks to '
                         'evaluate. Use --eval bbox, or a config and checkpoint with a mask '
                         'head.')
