"""Config helpers: the ``student``/``teacher`` arguments of a DistillDetector as model config dicts,
and clear errors for misspelt option names (close matches and the valid ones)."""
from __future__ import annotations

import copy
import difflib
import inspect
import re
from typing import List, Optional, Union

from mmengine.config import Config, ConfigDict

from .atomic import atomic_write
from .paths import resolve_path

ModelSpec = Union[str, dict, ConfigDict]


def load_model_cfg(spec: ModelSpec, role: str = 'model') -> ConfigDict:
    """Return the model config dict described by ``spec``.

    Args:
        spec: One of
            * a model dict with a ``type`` key (e.g. ``_base_.model`` of an inherited config);
            * a config file path, ``'mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py'`` or a
              local ``.py`` path; its ``model`` entry is used;
            * ``dict(config=PATH, **overrides)``: the ``model`` of the file at ``PATH`` with the
              overrides merged on top (e.g. ``dict(config=..., roi_head=dict(bbox_head=
              dict(num_classes=8)))``).
        role: ``'student'`` or ``'teacher'``, used in error messages.

    ``Config.fromfile('mmdet::...')`` is not supported by mmengine 0.10 (the ``pkg::`` scope only
    works inside ``_base_``), so the path is resolved to the file inside the installed package.
    """
    if isinstance(spec, str):
        return _model_from_file(spec, role)
    if isinstance(spec, (dict, ConfigDict)):
        spec = ConfigDict(copy.deepcopy(dict(spec)))
        if 'config' in spec:
            path = spec.pop('config')
            merged = Config(dict(model=_model_from_file(path, role).to_dict()))
            if spec:
                merged.merge_from_dict(dict(model=spec.to_dict()))
            return ConfigDict(merged.model.to_dict())
        if 'type' not in spec:
            raise ValueError(
                f"{role} must be a model dict with a 'type', a config path, or "
                f"dict(config=PATH, ...overrides); got a dict with keys {sorted(spec)}.")
        return spec
    raise TypeError(f'{role} must be a config path or a model dict, not {type(spec).__name__}.')


def _model_from_file(path: str, role: str) -> ConfigDict:
    full = resolve_path(path, f'{role} config')
    cfg = Config.fromfile(full)
    if 'model' not in cfg:
        raise ValueError(f"{role} config '{path}' ({full}) has no 'model' entry.")
    return ConfigDict(copy.deepcopy(cfg.model.to_dict()))


def constructor_options(cls: type) -> List[str]:
    """The keyword options ``cls(...)`` accepts: its ``__init__`` parameters and, through
    ``**kwargs``, those of the base classes it forwards them to."""
    names: List[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get('__init__')
        if init is None or klass is object:
            continue
        try:
            params = list(inspect.signature(init).parameters.values())[1:]
        except (TypeError, ValueError):
            break
        names += [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return list(dict.fromkeys(names))


def unknown_option_error(exc: TypeError, cls: type, what: str) -> Optional[TypeError]:
    """A clear error for ``cls(**cfg)`` failing on a misspelt option, or None when ``exc`` is
    another TypeError. Names ``what`` (e.g. ``"distill loss 'loss_kd'"``), the bad option, close
    matches and every valid option."""
    m = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
    if m is None:
        return None
    bad, valid = m.group(1), constructor_options(cls)
    close = difflib.get_close_matches(bad, valid, n=3, cutoff=0.6)
    guess = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ''
    return TypeError(f'{what} ({cls.__name__}): unknown option {bad!r}{guess}. Valid options: '
                     f'{", ".join(valid)}.')


#: Top-level config entries mmengine's Runner (or mmkd's tools) read even when a config does
#: not list them; any other new top-level key given with --cfg-options would be ignored.
RUNNER_KEYS = frozenset({
    'model', 'work_dir', 'train_dataloader', 'val_dataloader', 'test_dataloader', 'train_cfg',
    'val_cfg', 'test_cfg', 'auto_scale_lr', 'optim_wrapper', 'param_scheduler', 'val_evaluator',
    'test_evaluator', 'default_hooks', 'custom_hooks', 'data_preprocessor', 'load_from',
    'resume', 'launcher', 'env_cfg', 'log_processor', 'log_level', 'visualizer',
    'default_scope', 'randomness', 'experiment_name', 'model_wrapper_cfg',
    'find_unused_parameters', 'runner_type', 'custom_imports', 'strategy', 'compile',
    'backend_args', 'tta_model', 'tta_pipeline', 'vis_backends', 'gpu_ids', 'dist_params'})


def check_option_keys(cfg: Config, options: Optional[dict]) -> None:
    """Raise ``ValueError`` for a ``--cfg-options`` key whose top-level entry is neither in the
    config nor one the Runner reads: mmengine would add it and nothing would ever read it."""
    unknown = []
    for key in options or {}:
        top = str(key).split('.', 1)[0]
        if top not in cfg and top not in RUNNER_KEYS:
            unknown.append((key, top))
    if not unknown:
        return
    known = sorted(set(cfg.keys()) | RUNNER_KEYS)
    lines = []
    for key, top in unknown:
        close = difflib.get_close_matches(top, known, n=3, cutoff=0.6)
        guess = f" (did you mean {' or '.join(close)}?)" if close else ''
        lines.append(f"'{key}': '{top}' is not an entry of the config{guess}")
    raise ValueError('--cfg-options: ' + '; '.join(lines) + '. Such a key would be silently '
                   'ignored. Fix its spelling; the top-level entries of this config are: '
                   f'{", ".join(sorted(cfg.keys()))}.')


def write_config(cfg: Union[dict, Config], path: str) -> str:
    """Write ``cfg`` as a python config file, atomically (what ``Config.dump`` writes to a
    ``.py`` file); returns ``path``."""
    with atomic_write(path) as f:
        f.write(Config(copy.deepcopy(dict(cfg))).pretty_text)
    return path
