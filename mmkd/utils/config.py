"""Turn the ``student``/``teacher`` arguments of a DistillDetector into model config dicts."""
from __future__ import annotations

import copy
from typing import Union

from mmengine.config import Config, ConfigDict

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
