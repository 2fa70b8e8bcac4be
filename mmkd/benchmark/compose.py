"""Compose the benchmark's run configs from a data spec, a teacher/student pair and a method
preset, and check the pair before any training.

Every run's config is written out in full (``<run work dir>/benchmark_config.py``):

* runtime and schedule: the student config file's own (``train_cfg``, ``optim_wrapper``,
  ``param_scheduler``, ``default_hooks``, ...), else mmdet's default runtime and 1x schedule
  with ``auto_scale_lr`` on (lr 0.02 at 16 images, scaled to the batch);
* data: the data spec's dataloaders and evaluators;
* model: the student, the teacher (evaluated) or a ``DistillDetector`` built from the preset.
"""
from __future__ import annotations

import ast
import copy
import os.path as osp
from typing import Any, Dict, List, Optional, Tuple

from mmengine.config import Config, ConfigDict
from torch import nn

from ..utils.config import ModelSpec, load_model_cfg
from ..utils.paths import resolve_path
from .data import DataSpec
from .presets import MethodPlan, fragment, plain

#: Top-level entries taken from the student's config file (runtime and schedule).
RUNTIME_KEYS = ('train_cfg', 'val_cfg', 'test_cfg', 'optim_wrapper', 'param_scheduler',
                'auto_scale_lr', 'default_hooks', 'custom_hooks', 'env_cfg', 'log_processor',
                'log_level', 'visualizer', 'default_scope', 'randomness', 'load_from',
                'resume', 'model_wrapper_cfg', 'find_unused_parameters')
DEFAULT_RUNTIME = 'mmdet::_base_/default_runtime.py'
DEFAULT_SCHEDULE = 'mmdet::_base_/schedules/schedule_1x.py'
DATA_KEYS = ('train_dataloader', 'val_dataloader', 'test_dataloader', 'val_evaluator',
             'test_evaluator')


class PairError(ValueError):
    """A teacher / student / checkpoint that cannot be benchmarked; the message names the fix."""


def parse_model_spec(text: str) -> ModelSpec:
    """A ``--teacher`` / ``--student`` value: a config path (local, checkout-relative or
    ``mmdet::``), or a python dict literal (``"{'config': PATH, 'neck': {...}}"``)."""
    text = text.strip()
    if text.startswith('{'):
        try:
            spec = ast.literal_eval(text)
        except (ValueError, SyntaxError) as exc:
            raise PairError(f'could not parse the model dict {text!r}: {exc}') from None
        if not isinstance(spec, dict):
            raise PairError(f'{text!r} is not a dict')
        return spec
    return text


def spec_file(spec: ModelSpec) -> Optional[str]:
    """The config file a model spec names (a path, or ``dict(config=PATH)``), else None."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict) and isinstance(spec.get('config'), str):
        return spec['config']
    return None


def _load(path: str) -> Config:
    return Config.fromfile(resolve_path(path, 'config'))


def base_config(student_spec: ModelSpec, data: DataSpec) -> Config:
    """Runtime + schedule (the student file's, else mmdet's defaults) + the data's loaders."""
    path = spec_file(student_spec)
    own = _load(path) if path else Config()
    cfg: Dict[str, Any] = {}
    runtime = _load(DEFAULT_RUNTIME)
    for key in RUNTIME_KEYS:
        if key in own:
            cfg[key] = plain(own[key])
    if 'optim_wrapper' not in cfg or 'param_scheduler' not in cfg or 'train_cfg' not in cfg:
        sched = _load(DEFAULT_SCHEDULE)
        for key in ('train_cfg', 'val_cfg', 'test_cfg', 'optim_wrapper', 'param_scheduler'):
            cfg[key] = plain(sched[key])
        cfg['auto_scale_lr'] = dict(enable=True, base_batch_size=16)
    for key in ('default_scope', 'default_hooks', 'env_cfg', 'vis_backends', 'visualizer',
                'log_processor', 'log_level', 'load_from', 'resume'):
        if key not in cfg and key in runtime:
            cfg[key] = plain(runtime[key])
    cfg.pop('vis_backends', None)
    cfg['load_from'], cfg['resume'] = None, False
    for key in DATA_KEYS:
        cfg[key] = plain(data.cfg[key])
    return Config(cfg)


def student_pipelines(student_spec: ModelSpec) -> Optional[Tuple[list, list]]:
    """(train, test) pipelines of the student's config file when it has dataloaders."""
    path = spec_file(student_spec)
    if not path:
        return None
    cfg = _load(path)
    try:
        return (plain(cfg.train_dataloader.dataset.pipeline),
                plain(cfg.test_dataloader.dataset.pipeline))
    except (AttributeError, KeyError):
        return None


# ---- model dicts -------------------------------------------------------------------------------
def _class_heads(model: dict) -> List[dict]:
    heads = []
    roi = model.get('roi_head') or {}
    for key in ('bbox_head', 'mask_head'):
        h = roi.get(key)
        heads += h if isinstance(h, list) else [h] if isinstance(h, dict) else []
    for key in ('bbox_head', 'mask_head'):
        h = model.get(key)
        if isinstance(h, dict):
            heads.append(h)
    return [h for h in heads if 'num_classes' in h]


def set_num_classes(model: dict, n: int) -> Optional[int]:
    """Set every head's ``num_classes`` to ``n`` in place; returns the old count when it
    changed (None when it already was ``n``)."""
    heads = _class_heads(model)
    old = next((h['num_classes'] for h in heads if h['num_classes'] != n), None)
    for h in heads:
        h['num_classes'] = n
    return old


def strip_pretrained(model: Any) -> Any:
    """A copy of a model dict without ``Pretrained`` init_cfgs (finetune: the weights come from
    the student checkpoint, so nothing is downloaded)."""
    if isinstance(model, dict):
        out = {}
        for k, v in model.items():
            if k == 'init_cfg' and isinstance(v, dict) and v.get('type') == 'Pretrained':
                out[k] = None
            else:
                out[k] = strip_pretrained(v)
        return out
    if isinstance(model, list):
        return [strip_pretrained(v) for v in model]
    return copy.deepcopy(model)


def build_model(model: dict) -> nn.Module:
    """Build a model dict on the CPU (mmdet's and mmkd's registries; no weights loaded)."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.registry import DefaultScope

    import mmkd  # noqa: F401  registers mmkd's modules
    register_all_modules(init_default_scope=DefaultScope.get_current_instance() is None)
    from ..models.utils.dense_head_compat import add_missing_loss_cls
    m = MODELS.build(ConfigDict(copy.deepcopy(plain(model))))
    add_missing_loss_cls(m)
    return m


def load_model(spec: ModelSpec, role: str) -> dict:
    """The model dict of a ``--teacher`` / ``--student`` spec; a DistillDetector is refused."""
    try:
        model = plain(load_model_cfg(spec, role))
    except (FileNotFoundError, ValueError, TypeError) as exc:
        raise PairError(f'--{role} {spec!r}: {exc}') from None
    if str(model.get('type', '')).split('.')[-1] == 'DistillDetector':
        raise PairError(f'--{role} {spec!r} is a distillation config (DistillDetector); give '
                        f'the {role} detector\'s own config (e.g. its model.{role} entry).')
    return model


def check_detector(model: nn.Module, spec: ModelSpec, role: str) -> None:
    from mmdet.models.detectors import BaseDetector
    if not isinstance(model, BaseDetector):
        raise PairError(f'--{role} {spec!r} builds a {type(model).__name__}, not an mmdet '
                        f'detector (BaseDetector). Give a detector config (e.g. '
                        'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py) whose model has a '
                        'backbone, a neck and detection heads.')


def check_checkpoint(model: nn.Module, ckpt: str, spec: ModelSpec, role: str,
                     classes: List[str], flag: str) -> dict:
    """Load ``ckpt`` strictly into ``model`` (mmkd's loader) and compare the class names it
    records with the data's; returns its meta."""
    from types import SimpleNamespace

    from ..apis.runner_setup import check_checkpoint_classes
    from ..utils.checkpoint import CheckpointError, load_strict
    try:
        meta = load_strict(model, ckpt, role=role)
    except (CheckpointError, FileNotFoundError) as exc:
        raise PairError(f'{flag} {ckpt} does not fit --{role} {spec!r}:\n{exc}') from None
    holder = SimpleNamespace(**{f'{role}_ckpt_meta': meta, f'{role}_ckpt': ckpt})
    try:
        check_checkpoint_classes(holder, classes)
    except ValueError as exc:
        raise PairError(f'{flag}: {exc}') from None
    return meta


def check_classes(model: nn.Module, spec: ModelSpec, role: str, classes: List[str]) -> None:
    from ..models.detectors.distill_detector import num_classes_of
    n = num_classes_of(model)
    if n is not None and n != len(classes):
        raise PairError(f'--{role} {spec!r} predicts {n} classes but the data has '
                        f'{len(classes)} ({", ".join(classes)}). Use a {role} trained on this '
                        f'data (num_classes={len(classes)} in its config), or data with its '
                        'classes.')


# ---- run configs -------------------------------------------------------------------------------
def plain_config(base: Config, model: dict, load_from: Optional[str] = None) -> Config:
    """A plain detector run: ``base`` with ``model`` (and ``load_from`` for finetuning)."""
    cfg = copy.deepcopy(base)
    cfg.model = copy.deepcopy(model)
    if load_from:
        cfg.load_from = load_from
    return cfg


def distill_hooks(base: Config, plan: MethodPlan) -> List[dict]:
    """The method's hooks (or mmkd's distillation hooks), then the student's own hooks that
    are not there yet (NumClassCheckHook dropped: it expects a plain detector)."""
    hooks = plain(plan.custom_hooks) if plan.custom_hooks is not None else \
        plain(fragment('runtime').custom_hooks)
    have = {h['type'] for h in hooks}
    for h in plain(base.get('custom_hooks') or []):
        if h['type'] not in have and h['type'] != 'NumClassCheckHook':
            hooks.append(h)
    return hooks


def distill_config(base: Config, plan: MethodPlan, student: dict, teacher: dict,
                   teacher_ckpt: Optional[str], student_ckpt: Optional[str] = None,
                   auto_balance: bool = False) -> Config:
    """A DistillDetector run of ``plan``."""
    cfg = copy.deepcopy(base)
    model = dict(type='DistillDetector', student=copy.deepcopy(plan.student or student),
                 teacher=copy.deepcopy(teacher), teacher_ckpt=teacher_ckpt,
                 distill_losses=copy.deepcopy(plan.distill_losses))
    if student_ckpt:
        model['student_ckpt'] = student_ckpt
    model.update(copy.deepcopy(plan.model_extra))
    if auto_balance:
        model['auto_balance'] = True
    cfg.model = model
    cfg.custom_imports = plain(fragment('runtime').custom_imports)
    cfg.custom_hooks = distill_hooks(base, plan)
    for key, value in plan.cfg_extra.items():
        cfg[key] = copy.deepcopy(value)
    return cfg


def cls_teacher_config(path: str, data: DataSpec) -> Config:
    """DICOD's classifier-teacher config retargeted to the data: its loaders' files and
    classes, ``model.num_classes``."""
    cfg = copy.deepcopy(_load(path))
    for split in ('train', 'val'):
        src = data.cfg[f'{split}_dataloader']['dataset']
        while 'dataset' in src and 'ann_file' not in src:
            src = src['dataset']
        dst = cfg[f'{split}_dataloader']['dataset']
        for key in ('data_root', 'ann_file', 'data_prefix', 'metainfo'):
            if key in src:
                dst[key] = copy.deepcopy(plain(src[key]))
    cfg.model.num_classes = len(data.classes)
    return cfg


def finetune_student(model: dict) -> dict:
    """The student model dict of the finetune protocol (no Pretrained init)."""
    return strip_pretrained(model)


def is_exported(ckpt: str) -> bool:
    """True when ``ckpt`` holds plain detector keys (not a DistillDetector's ``student.*``),
    so mmengine's ``load_from`` can load it into a plain detector."""
    from ..utils.checkpoint import STUDENT_PREFIX, load_checkpoint_file
    state = load_checkpoint_file(ckpt, 'student', mmap=True)
    state = state.get('state_dict', state)
    return not any(str(k).startswith(STUDENT_PREFIX) for k in state)


def resolved(path: str, role: str, flag: str) -> str:
    """The absolute local path of a checkpoint flag's value; a missing file raises
    ``FileNotFoundError`` naming the flag."""
    from ..utils.checkpoint import resolve_checkpoint_path
    try:
        return osp.abspath(resolve_checkpoint_path(path, role))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f'{flag}: {exc}') from None
