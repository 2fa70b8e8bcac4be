"""Checkpoint loading that is strict where it matters and safe under ``weights_only=True``.

* :func:`allow_mmengine_checkpoint_types` lets torch >= 2.6 (which loads with
  ``weights_only=True`` by default) read mmengine's own training checkpoints, by allow-listing
  exactly the classes those checkpoints pickle (the message hub's ``HistoryBuffer`` and the numpy
  array/scalar types it stores). Everything else stays forbidden.
* :func:`load_strict` loads a checkpoint into a model, and on any missing key, unexpected key or
  shape mismatch raises :class:`CheckpointMismatchError` naming the file, the keys and the likely
  cause. Silent non-strict teacher loads are the most reported failure of other KD toolkits.
* :func:`student_state_dict` / :func:`export_student_checkpoint` turn an mmkd checkpoint into
  one that plain mmdet loads with the student's own config.
"""
from __future__ import annotations

import os
import os.path as osp
import pickle
import re
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from .mmdet2_compat import upgrade_for
from .paths import resolve_path

STUDENT_PREFIX = 'student.'
_REMOTE = ('http://', 'https://', 'torchvision://', 'open-mmlab://', 'openmmlab://', 's3://')
_CLS_KEY = re.compile(r'(^|\.)(fc_cls|conv_cls|retina_cls|atss_cls|fcos_cls|gfl_cls|rpn_cls|'
                      r'cls_convs?\.\d+|cls_out|fc|classifier|vfnet_cls|solo_cls|cls_logits)'
                      r'\.(weight|bias)$')


def _mmengine_checkpoint_types() -> List[Any]:
    """The non-tensor classes that mmengine 0.10 training checkpoints pickle."""
    from mmengine.logging.history_buffer import HistoryBuffer
    core = getattr(np, '_core', None) or np.core  # numpy 2 renamed numpy.core
    types: List[Any] = [HistoryBuffer, np.ndarray, np.dtype, core.multiarray._reconstruct,
                        core.multiarray.scalar]
    # numpy >= 1.25 pickles dtypes as instances of per-type classes (numpy.dtypes.Float64DType).
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        types += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType')]
    return types


#: The only attribute lookups mmengine checkpoints pickle: ``HistoryBuffer.__getstate__`` stores
#: its statistics methods, which pickle as ``getattr(HistoryBuffer, 'min')`` etc.
_HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')


def history_buffer_getattr(obj: Any, name: str) -> Any:
    """Stand-in for ``builtins.getattr`` during ``weights_only`` loads.

    Allow-listing the real ``getattr`` would let a malicious file reach any attribute of any
    allowed object (e.g. a function's ``__globals__``). This resolves exactly the lookups
    mmengine's ``HistoryBuffer`` pickles and refuses everything else.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'refusing getattr({getattr(obj, "__name__", type(obj).__name__)}, {name!r}) while '
        'loading a checkpoint with weights_only=True: mmkd only allows the '
        'HistoryBuffer statistics methods that mmengine checkpoints contain.')


def allow_mmengine_checkpoint_types() -> None:
    """Allow-list, for ``torch.load(weights_only=True)``, the types mmengine checkpoints hold.

    Called on ``import mmkd``. Resuming a run (optimizer, scheduler and message-hub state) then
    works on torch >= 2.6 without turning ``weights_only`` off.
    """
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:  # torch < 2.4 has no allow-list and no weights_only default
        add(_mmengine_checkpoint_types() + [(history_buffer_getattr, 'builtins.getattr')])


def load_checkpoint_file(path: str, role: str = 'checkpoint') -> Dict[str, Any]:
    """Load a checkpoint (local path or URL) on the CPU with ``weights_only`` safety kept on."""
    if path.startswith(_REMOTE):
        from mmengine.runner.checkpoint import _load_checkpoint
        return _load_checkpoint(path, map_location='cpu')
    try:
        full = resolve_path(path, f'{role} checkpoint')
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f'{exc} Download it first: checkpoints/README.md lists every checkpoint the mmkd '
            'configs expect, with its source URL and sha256.') from None
    return torch.load(full, map_location='cpu', weights_only=True)


def extract_state_dict(checkpoint: Dict[str, Any]) -> 'OrderedDict[str, torch.Tensor]':
    """The model weights of a checkpoint, with DDP's ``module.`` prefix removed.

    A full mmkd training checkpoint (keys ``student.*``) gives the student's weights, so a
    distilled student can teach the next round.
    """
    state = checkpoint.get('state_dict', checkpoint.get('model', checkpoint))
    if not isinstance(state, dict):
        raise ValueError('checkpoint holds no state_dict')
    state = OrderedDict((k[7:] if k.startswith('module.') else k, v) for k, v in state.items())
    if any(k.startswith(STUDENT_PREFIX) for k in state):
        state = student_state_dict(state)
    return state


def _shape_hint(key: str, ckpt_shape: Tuple[int, ...], model_shape: Tuple[int, ...]) -> str:
    if _CLS_KEY.search(key) and ckpt_shape[1:] == model_shape[1:]:
        return (f'the classifier {key} has {ckpt_shape[0]} outputs in the checkpoint but '
                f'{model_shape[0]} in the config: the checkpoint was trained with a different '
                'num_classes. Set num_classes in the config to match the checkpoint, or use a '
                'checkpoint trained on your dataset.')
    return ''


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not fit the model it is loaded into."""


def check_compatible(model: nn.Module, state: Dict[str, torch.Tensor], path: str,
                     role: str) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``state`` fits ``model`` exactly."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own
                  if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or mismatched):
        return

    def show(keys: List[str]) -> str:
        more = f' ... (+{len(keys) - 8} more)' if len(keys) > 8 else ''
        return ', '.join(keys[:8]) + more

    lines = [f"{role} checkpoint '{path}' does not match the {role} model:"]
    if missing:
        lines.append(f'  missing in the checkpoint ({len(missing)}): {show(missing)}')
    if unexpected:
        lines.append(f'  unexpected in the checkpoint ({len(unexpected)}): {show(unexpected)}')
    if mismatched:
        shown = [f'{k} {c} vs model {m}' for k, c, m in mismatched]
        lines.append(f'  shape mismatch ({len(mismatched)}): {show(shown)}')
    causes = [h for h in (_shape_hint(*m) for m in mismatched) if h]
    if causes:
        lines.append('Likely cause: ' + causes[0])
    elif missing and unexpected:
        heads_m = sorted({k.split('.')[0] for k in missing})
        heads_u = sorted({k.split('.')[0] for k in unexpected})
        lines.append(f'Likely cause: the checkpoint is for another architecture (modules '
                     f'{heads_u} in the file vs {heads_m} in the config); check that the '
                     f'{role} config is the one the checkpoint was trained with.')
    elif missing:
        lines.append(f'Likely cause: the config has modules the checkpoint lacks (e.g. a mask '
                     f'head); use the checkpoint trained with this {role} config.')
    else:
        lines.append(f'Likely cause: the checkpoint has modules the config lacks; use the '
                     f'{role} config the checkpoint was trained with.')
    raise CheckpointMismatchError('\n'.join(lines))


def load_strict(model: nn.Module, path: str, role: str = 'teacher') -> Dict[str, Any]:
    """Load ``path`` into ``model`` strictly; returns the checkpoint's ``meta`` (may be empty)."""
    checkpoint = load_checkpoint_file(path, role)
    state = extract_state_dict(checkpoint)
    state = upgrade_for(model, state)  # mmdet 2.x key names (mmdet2_compat.py)
    check_compatible(model, state, path, role)
    model.load_state_dict(state, strict=True)
    return checkpoint.get('meta', {}) if isinstance(checkpoint, dict) else {}


def student_state_dict(state: Dict[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """Keep the ``student.*`` weights of an mmkd state dict, without the prefix.

    Distillation-only modules (adapters, prototype buffers, ...) live outside ``student`` and
    are dropped.
    """
    return OrderedDict((k[len(STUDENT_PREFIX):], v) for k, v in state.items()
                       if k.startswith(STUDENT_PREFIX))


def _plain(obj: Any) -> Any:
    """Convert numpy values in metadata to plain Python so the file loads with weights_only."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def make_student_checkpoint(checkpoint: Dict[str, Any], use_ema: bool = False,
                            source: Optional[str] = None) -> Dict[str, Any]:
    """Build a plain-mmdet student checkpoint dict from an mmkd training checkpoint dict."""
    if use_ema:
        if 'ema_state_dict' not in checkpoint:
            raise KeyError('use_ema=True but the checkpoint has no ema_state_dict '
                           '(was EMAHook enabled?)')
        state = checkpoint['ema_state_dict']
    else:
        state = checkpoint.get('state_dict', checkpoint)
    state = OrderedDict((k[7:] if k.startswith('module.') else k, v) for k, v in state.items())
    student = student_state_dict(state)
    if not student:
        raise ValueError(f"no '{STUDENT_PREFIX}*' weights in {source or 'the checkpoint'}: it "
                         'is not an mmkd DistillDetector checkpoint (a plain detector '
                         'checkpoint can be used as it is).')
    meta = checkpoint.get('meta', {}) or {}
    from ..version import __version__
    new_meta = dict(
        dataset_meta=_plain(meta.get('dataset_meta')),
        epoch=_plain(meta.get('epoch')), iter=_plain(meta.get('iter')),
        mmkd=dict(version=__version__, exported_from=source, ema=use_ema))
    return dict(meta=new_meta, state_dict=OrderedDict((k, v.detach().cpu().clone())
                                                      for k, v in student.items()))


def file_sha256(path: str) -> str:
    """Hex sha256 of a file's bytes."""
    import hashlib
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def publish_checkpoint(src: str, dst: str, half: bool = False,
                       extra_meta: Optional[Dict[str, Any]] = None) -> str:
    """Write a release copy of the training checkpoint ``src``: weights (fp16 when ``half``;
    they load back into fp32 models) and metadata only, without optimizer, scheduler or
    message-hub state; ``extra_meta`` goes under ``meta['mmkd']``. Returns ``dst``."""
    checkpoint = load_checkpoint_file(src, 'training')
    state = OrderedDict((k, v.detach().cpu().half() if half and v.is_floating_point()
                         else v.detach().cpu().clone())
                        for k, v in extract_state_dict(checkpoint).items())
    meta = checkpoint.get('meta', {}) or {}
    from ..version import __version__
    new_meta = dict(dataset_meta=_plain(meta.get('dataset_meta')),
                    epoch=_plain(meta.get('epoch')), iter=_plain(meta.get('iter')),
                    mmkd=dict(version=__version__, published_from=osp.basename(src),
                              fp16=half, **_plain(extra_meta or {})))
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    tmp = dst + '.tmp'
    torch.save(dict(meta=new_meta, state_dict=state), tmp)
    os.replace(tmp, dst)
    return dst


def student_path_for(path: str) -> str:
    """``work_dir/epoch_12.pth`` -> ``work_dir/epoch_12_student.pth``."""
    root, ext = osp.splitext(path)
    return f'{root}_student{ext or ".pth"}'


def export_student_checkpoint(src: str, dst: Optional[str] = None, use_ema: bool = False) -> str:
    """Write the student-only twin of the mmkd checkpoint ``src``; returns its path."""
    checkpoint = load_checkpoint_file(src, 'mmkd')
    out = make_student_checkpoint(checkpoint, use_ema=use_ema, source=osp.basename(src))
    dst = dst or student_path_for(src)
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    tmp = dst + '.tmp'
    torch.save(out, tmp)
    os.replace(tmp, dst)  # atomic: a killed run never leaves a half-written twin
    return dst
