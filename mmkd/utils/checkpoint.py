"""Checkpoint I/O that is strict where it matters, safe under ``weights_only=True`` and atomic.

* :func:`allow_mmengine_checkpoint_types` lets torch >= 2.6 (which loads with
  ``weights_only=True`` by default) read mmengine's own training checkpoints, by allow-listing
  exactly the classes those checkpoints pickle (the message hub's ``HistoryBuffer`` and the numpy
  array/scalar types it stores). Everything else stays forbidden.
* :func:`load_checkpoint_file` is the one loader every mmkd load path uses (teacher,
  ``student_ckpt``, ``--resume``, ``tools/test.py``, export, publish, benchmark). A missing file
  raises :class:`CheckpointNotFoundError`; an empty, truncated, corrupt or random-bytes file, or
  one that pickles code, raises :class:`CorruptCheckpointError`. Both name the file and the cause;
  neither ever suggests turning ``weights_only`` off.
* :func:`load_strict` loads a checkpoint into a model, and on any missing key, unexpected key or
  shape mismatch raises :class:`CheckpointMismatchError` naming the file, the keys and the likely
  cause, derived from the actual mismatch. Silent non-strict teacher loads are the most reported
  failure of other KD toolkits.
* :func:`check_resume_checkpoint` / :func:`find_resume_checkpoint` make ``--resume`` as strict.
* :func:`student_state_dict` / :func:`export_student_checkpoint` turn an mmkd checkpoint into
  one that plain mmdet loads with the student's own config.
* :func:`save_atomic` writes checkpoints with :func:`~mmkd.utils.atomic.atomic_write` (temporary
  file, then rename), so a process killed mid-write never leaves a truncated file under the final
  name.
"""
from __future__ import annotations

import importlib
import os
import os.path as osp
import pickle
import re
import zipfile
from collections import OrderedDict
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .atomic import atomic_write
from .mmdet2_compat import upgrade_for
from .paths import resolve_path
from .torch_compat import add_safe_globals, safe_torch_load

STUDENT_PREFIX = 'student.'
DISTILL_PREFIX = 'distill_losses.'
#: ``meta['mmkd']['writer']`` of the student twins :class:`StudentCheckpointHook` writes.
TWIN_WRITER = 'StudentCheckpointHook'
_REMOTE = ('http://', 'https://', 'torchvision://', 'open-mmlab://', 'openmmlab://', 's3://')
_CLS_KEY = re.compile(r'(^|\.)(fc_cls|conv_cls|retina_cls|atss_cls|fcos_cls|gfl_cls|rpn_cls|'
                      r'cls_convs?\.\d+|cls_out|fc|classifier|vfnet_cls|solo_cls|cls_logits)'
                      r'\.(weight|bias)$')
#: Training checkpoints mmengine's CheckpointHook names (``epoch_N.pth`` / ``iter_N.pth``).
_RUN_CKPT = re.compile(r'^(epoch|iter)_(\d+)\.pth$')


# ---- errors ----------------------------------------------------------------------------------
class CheckpointError(RuntimeError):
    """Base class of mmkd's checkpoint errors; each message names the file and the cause."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint does not fit the model it is loaded into (keys, shapes, or kind of file)."""


class CorruptCheckpointError(CheckpointError):
    """A file that is not a loadable checkpoint: empty, truncated, corrupt, not a checkpoint at
    all, or pickling Python objects that safe (``weights_only``) loading refuses."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint path that does not exist (also a :class:`FileNotFoundError`)."""


def _mmengine_checkpoint_types() -> List[Any]:
    """The non-tensor classes that mmengine 0.10 training checkpoints pickle."""
    from mmengine.logging.history_buffer import HistoryBuffer

    # numpy 2 renamed numpy.core to numpy._core; numpy 1.26 already has a numpy._core package,
    # but a bare shim whose submodules are not attributes, so pick by the major version
    multiarray = importlib.import_module(
        'numpy._core.multiarray' if int(np.__version__.split('.')[0]) >= 2
        else 'numpy.core.multiarray')
    types: List[Any] = [HistoryBuffer, np.ndarray, np.dtype, multiarray._reconstruct,
                        multiarray.scalar]
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
    # every torch version: torch >= 2.4's allow-list, mmkd's restricted unpickler before 2.4
    add_safe_globals(_mmengine_checkpoint_types() + [(history_buffer_getattr, 'builtins.getattr')])


# ---- loading -----------------------------------------------------------------------------------
def _torch_reason(exc: BaseException) -> str:
    """torch's own reason for a failed load, without its advice to switch safety off."""
    text = str(exc)
    m = re.search(r'WeightsUnpickler error:\s*(.+?)(?:\n\s*\n|$)', text, re.S)
    if m:
        text = m.group(1)
    text = re.split(r'Please use `?torch\.serialization|This is an internal miniz error|'
                    r'If you are seeing this error|Re-?running `?torch\.load', text)[0]
    text = ' '.join(text.split()).strip(' .')
    return text[:300] or type(exc).__name__


def _load_failure(exc: BaseException) -> str:
    """What a failed ``torch.load`` says about the file, in words."""
    reason = _torch_reason(exc)
    if 'Unsupported global' in reason or 'refusing getattr' in reason:
        return ('holds pickled Python objects that safe loading refuses '
                f'({reason}). A checkpoint holds tensors, numbers, strings, containers and the '
                'mmengine/numpy types of training checkpoints; mmkd never runs code from a '
                'checkpoint file. Use a checkpoint that holds only weights and training state')
    if isinstance(exc, (EOFError, zipfile.BadZipFile)) or re.search(
            r'EOF|zip archive|central directory|corrupt|truncat', reason, re.I):
        return (f'is truncated or corrupt ({reason or "the file ends early"}): a copy or '
                'download that did not finish, or a process killed while writing it')
    return f'is not a PyTorch checkpoint ({type(exc).__name__}: {reason})'


def _unloadable(path: str, full: str, role: str, what: str) -> CorruptCheckpointError:
    size = osp.getsize(full) if osp.isfile(full) else None
    sized = f', {size} bytes' if size is not None else ''
    fix = '' if 'refuses' in what else (' Use an intact copy: download or copy it again, or '
                                        'take another checkpoint of the run.')
    return CorruptCheckpointError(
        f"{role} checkpoint '{path}' ({full}{sized}) cannot be loaded: it {what}.{fix}")


def resolve_checkpoint_path(path: str, role: str = 'checkpoint') -> str:
    """The existing local file ``path`` names, else :class:`CheckpointNotFoundError`."""
    try:
        return resolve_path(path, f'{role} checkpoint')
    except FileNotFoundError as exc:
        raise CheckpointNotFoundError(
            f'{exc} If it is a released checkpoint, download it first: checkpoints/README.md '
            'lists every checkpoint the mmkd configs expect, with its source URL and sha256.'
        ) from None


def load_checkpoint_file(path: str, role: str = 'checkpoint',
                         map_location: Any = 'cpu', mmap: bool = False) -> Dict[str, Any]:
    """Load a checkpoint (local path or URL) with ``weights_only`` safety kept on.

    The one loader of every mmkd load path. Raises :class:`CheckpointNotFoundError` for a path
    that does not exist and :class:`CorruptCheckpointError` for a file that is empty, truncated,
    corrupt, not a checkpoint, or pickles code; both name the file (``role`` says which one, e.g.
    ``'teacher'``) and never suggest turning ``weights_only`` off.

    Args:
        path: local path (absolute, or relative to the current directory or the checkout), or
            a URL.
        role: what the file is for, used in the messages.
        map_location: as for ``torch.load``.
        mmap: memory-map the tensors instead of reading them (cheap when only ``meta`` is
            needed).
    """
    if path.startswith(_REMOTE):
        from mmengine.runner.checkpoint import _load_checkpoint
        try:
            checkpoint = _load_checkpoint(path, map_location=map_location)
        except (OSError, MemoryError):
            raise
        except Exception as exc:  # torch raises several kinds for a bad file
            raise _unloadable(path, path, role, _load_failure(exc)) from None
        return _require_dict(checkpoint, path, path, role)
    full = resolve_checkpoint_path(path, role)
    if osp.getsize(full) == 0:
        raise _unloadable(path, full, role, 'is empty: a copy or download that did '
                          'not finish, or a process killed while writing it')
    mmap = mmap and zipfile.is_zipfile(full)  # legacy (pre-1.6) files cannot be mapped
    try:
        checkpoint = safe_torch_load(full, map_location=map_location, mmap=mmap)
    except (OSError, MemoryError):
        raise
    except Exception as exc:  # UnpicklingError, EOFError, RuntimeError, KeyError, ...
        raise _unloadable(path, full, role, _load_failure(exc)) from None
    return _require_dict(checkpoint, path, full, role)


def _require_dict(checkpoint: Any, path: str, full: str, role: str) -> Dict[str, Any]:
    if not isinstance(checkpoint, dict):
        raise _unloadable(path, full, role, f'holds a {type(checkpoint).__name__} instead of a '
                          'checkpoint dict (weights under state_dict, or a state dict itself)')
    return checkpoint


def checkpoint_meta(checkpoint: Dict[str, Any]) -> Dict[str, Any]:
    """The ``meta`` dict of a loaded checkpoint ({} when it has none)."""
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    return meta if isinstance(meta, dict) else {}


def _strip_module(state: Dict[str, Any]) -> 'OrderedDict[str, Any]':
    return OrderedDict((k[7:] if k.startswith('module.') else k, v) for k, v in state.items())


def extract_state_dict(checkpoint: Dict[str, Any], path: str = 'the checkpoint',
                       role: str = 'checkpoint') -> 'OrderedDict[str, torch.Tensor]':
    """The model weights of a checkpoint, with DDP's ``module.`` prefix removed.

    A full mmkd training checkpoint (keys ``student.*``) gives the student's weights, so a
    distilled student can teach the next round. Raises :class:`CorruptCheckpointError` naming
    ``path`` when the file holds no weights.
    """
    state = checkpoint.get('state_dict', checkpoint.get('model', checkpoint))
    if not isinstance(state, dict) or not state or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        raise CorruptCheckpointError(
            f"{role} checkpoint '{path}' holds no model weights (no 'state_dict' of tensors; "
            f'top-level keys: {sorted(map(str, checkpoint))[:8]}): it is not a model checkpoint.')
    state = _strip_module(state)
    if any(k.startswith(STUDENT_PREFIX) for k in state):
        state = student_state_dict(state)
    return state


# ---- strict compatibility ----------------------------------------------------------------------
def _prefixes(keys: Iterable[str]) -> set:
    """Every dotted prefix of ``keys``, the keys included."""
    out = set()
    for k in keys:
        parts = k.split('.')
        out.update('.'.join(parts[:i]) for i in range(1, len(parts) + 1))
    return out


def _absent(keys: Sequence[str], other: Iterable[str]) -> List[str]:
    """The outermost modules (or tensors) holding ``keys`` that ``other`` lacks entirely."""
    have = _prefixes(other)
    out = []
    for k in keys:
        parts = k.split('.')
        for i in range(1, len(parts) + 1):
            p = '.'.join(parts[:i])
            if p not in have:
                out.append(p)
                break
    return sorted(set(out))


def _blocks(container: str, keys: Iterable[str]) -> int:
    """How many numbered blocks ``container.<i>.*`` the keys hold."""
    n = len(container) + 1
    return len({k[n:].split('.', 1)[0] for k in keys if k.startswith(container + '.')
                and k[n:].split('.', 1)[0].isdigit()})


def _show(items: Sequence[str], n: int = 8) -> str:
    more = f' ... (+{len(items) - n} more)' if len(items) > n else ''
    return ', '.join(items[:n]) + more


def _loss_names(keys: Iterable[str]) -> List[str]:
    return sorted({k.split('.')[1] for k in keys if k.startswith(DISTILL_PREFIX)})


def _likely_cause(own: Sequence[str], state: Sequence[str], missing: List[str],
                  unexpected: List[str], mismatched: List[Tuple[str, tuple, tuple]],
                  role: str) -> str:
    """The likely cause of a mismatch, read from the mismatch itself."""
    fix = f'use the {role} config the checkpoint was trained with, or a checkpoint of this config'
    problem = missing + unexpected + [k for k, _, _ in mismatched]
    if problem and all(k.startswith(DISTILL_PREFIX) for k in problem):
        return (f'the checkpoint was written by another distillation config: its distillation '
                f'modules are {_loss_names(state) or "none"}, the config builds '
                f'{_loss_names(own) or "none"}, and they differ (first: {problem[0]}). Resume '
                'with the config that wrote the checkpoint, or start a new work dir.')
    for k, c, m in mismatched:
        if _CLS_KEY.search(k) and len(c) == len(m) and c[1:] == m[1:]:
            return (f'the classifier {k} has {c[0]} outputs in the checkpoint but {m[0]} in the '
                    'config: the checkpoint was trained with a different num_classes. Set '
                    'num_classes in the config to match the checkpoint, or use a checkpoint '
                    'trained on your dataset.')
    gone, extra = _absent(missing, state), _absent(unexpected, own)
    depth = []
    for p in gone + extra:
        container, _, last = p.rpartition('.')
        if last.isdigit() and container:
            nf, nc = _blocks(container, state), _blocks(container, own)
            if nf != nc:
                depth.append(f'{container} has {nf} blocks in the checkpoint and {nc} in the '
                             'config')
    if depth:
        return (f'the model depth differs: {"; ".join(sorted(set(depth)))} (e.g. ResNet-34 vs '
                f'ResNet-18 weights); {fix}.')
    if mismatched:
        k, c, m = mismatched[0]
        if len(c) != len(m):
            what = 'another kind of layer (the tensors have a different number of dimensions)'
        elif len(c) > 2 and c[:2] == m[:2]:
            what = f'another kernel size ({c[2:]} vs {m[2:]})'
        else:
            what = ('another width: the layers have other channel counts (e.g. another '
                    'base_channels/out_channels of the backbone, neck or head)')
        return f'{k} is {c} in the checkpoint but {m} in the config: a model of {what}; {fix}.'
    if gone and extra:
        return (f'the checkpoint is for another architecture: it has {_show(extra, 4)} where '
                f'the config has {_show(gone, 4)} (a different backbone, neck or head); {fix}.')
    if gone:
        return (f'the config has modules the checkpoint lacks entirely ({_show(gone, 4)}): a '
                f'model with another or an extra head/module; {fix}.')
    if extra:
        return (f'the checkpoint has modules the config lacks ({_show(extra, 4)}): it was '
                f'trained with another or an extra head/module; {fix}.')
    return f'{fix}.'


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
    lines = [f"{role} checkpoint '{path}' does not match the {role} model:"]
    if missing:
        lines.append(f'  missing in the checkpoint ({len(missing)}): {_show(missing)}')
    if unexpected:
        lines.append(f'  unexpected in the checkpoint ({len(unexpected)}): {_show(unexpected)}')
    if mismatched:
        shown = [f'{k} {c} vs model {m}' for k, c, m in mismatched]
        lines.append(f'  shape mismatch ({len(mismatched)}): {_show(shown)}')
    lines.append('Likely cause: ' + _likely_cause(list(own), list(state), missing, unexpected,
                                                  mismatched, role))
    raise CheckpointMismatchError('\n'.join(lines))


def load_strict(model: nn.Module, path: str, role: str = 'teacher') -> Dict[str, Any]:
    """Load ``path`` into ``model`` strictly; returns the checkpoint's ``meta`` (may be empty)."""
    checkpoint = load_checkpoint_file(path, role)
    state = extract_state_dict(checkpoint, path, role)
    state = upgrade_for(model, state)  # mmdet 2.x key names (mmdet2_compat.py)
    check_compatible(model, state, path, role)
    model.load_state_dict(state, strict=True)
    return checkpoint_meta(checkpoint)


# ---- resume ------------------------------------------------------------------------------------
def is_student_twin(checkpoint: Dict[str, Any]) -> bool:
    """True for a student-only file (an exported twin): weights and meta, no training state."""
    mmkd_meta = checkpoint_meta(checkpoint).get('mmkd') or {}
    return 'message_hub' not in checkpoint and (
        'exported_from' in mmkd_meta or TWIN_WRITER == mmkd_meta.get('writer'))


def _training_checkpoints(work_dir: str) -> List[str]:
    """``epoch_N.pth`` / ``iter_N.pth`` of a work dir, newest (highest N) first."""
    found = []
    for name in os.listdir(work_dir) if osp.isdir(work_dir) else []:
        m = _RUN_CKPT.match(name)
        if m:
            found.append((int(m.group(2)), osp.join(work_dir, name)))
    return [p for _, p in sorted(found, reverse=True)]


def previous_good_checkpoint(work_dir: str, exclude: str) -> Optional[str]:
    """The newest training checkpoint of ``work_dir`` other than ``exclude`` that loads and
    holds training state, or None."""
    bad = osp.realpath(exclude)
    for path in _training_checkpoints(work_dir):
        if osp.realpath(path) == bad:
            continue
        try:
            ckpt = load_checkpoint_file(path, 'resume', mmap=True)
        except CheckpointError:
            continue
        if 'message_hub' in ckpt and 'state_dict' in ckpt:
            return path
    return None


def check_resume_checkpoint(model: nn.Module, path: str,
                            work_dir: Optional[str] = None) -> Dict[str, Any]:
    """Check, before training starts, that ``path`` resumes ``model`` exactly.

    mmengine's resume loads the weights non-strictly (a checkpoint of another config loads
    partly and the rest stays initialised, or fails later with a broadcast error). This loads
    the file with :func:`load_checkpoint_file` and compares every key and shape of the model's
    state dict (``student.*`` and ``distill_losses.*`` for a DistillDetector) with it.

    Args:
        model: the (unwrapped) model being trained.
        path: the checkpoint to resume from.
        work_dir: given when ``path`` was found automatically (``--resume`` without a path):
            an unusable newest checkpoint then names the previous good one.

    Returns:
        The loaded checkpoint.

    Raises:
        CorruptCheckpointError / CheckpointNotFoundError: the file cannot be loaded.
        CheckpointMismatchError: a student-only file, a file without training state, or keys or
            shapes that differ from the model's.
    """
    try:
        checkpoint = load_checkpoint_file(path, 'resume')
    except (CorruptCheckpointError, CheckpointNotFoundError) as exc:
        if work_dir is None:
            raise
        prev = previous_good_checkpoint(work_dir, path)
        hint = (f'The previous good checkpoint is {prev}: resume from it with --resume {prev}.'
                if prev else 'No other checkpoint of the work dir loads: start without '
                '--resume (or use a new work dir).')
        raise type(exc)(f'--resume: the newest checkpoint of {work_dir} (named by its '
                        f'last_checkpoint file) is unusable. {exc} {hint}') from None
    if is_student_twin(checkpoint):
        full = str(path)
        twin_of = str((checkpoint_meta(checkpoint).get('mmkd') or {}).get('twin_of') or '')
        source = twin_of if twin_of and osp.isfile(twin_of) else None
        raise CheckpointMismatchError(
            f"resume checkpoint '{full}' is a student-only file (the plain-mmdet twin of a "
            'training checkpoint: student weights only, no optimizer, schedulers or training '
            'progress), so it cannot be resumed. To start the student from it, use '
            f'model.student_ckpt={full}; to resume, give the full training checkpoint'
            + (f' {source}.' if source else ' (epoch_N.pth, not epoch_N_student.pth).'))
    lacking = [k for k in ('state_dict', 'message_hub', 'meta') if k not in checkpoint]
    if lacking:
        raise CheckpointMismatchError(
            f"resume checkpoint '{path}' is not an mmengine training checkpoint: it has no "
            f'{", ".join(lacking)} (top-level keys: {sorted(map(str, checkpoint))[:8]}). To '
            'start from its weights without resuming, use load_from (a plain detector) or '
            'model.student_ckpt (a distillation config).')
    check_compatible(model, _strip_module(checkpoint['state_dict']), path, 'resume')
    return checkpoint


# ---- writing -----------------------------------------------------------------------------------
def save_atomic(obj: Any, dst: str) -> str:
    """``torch.save(obj, dst)`` through :func:`~mmkd.utils.atomic.atomic_write`: a process
    killed at any point leaves either the old ``dst`` or the complete new one, never a
    truncated file."""
    with atomic_write(dst, 'wb') as f:
        torch.save(obj, f)
    return dst


# ---- student export ----------------------------------------------------------------------------
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
                            source: Optional[str] = None,
                            twin_of: Optional[str] = None) -> Dict[str, Any]:
    """Build a plain-mmdet student checkpoint dict from an mmkd training checkpoint dict.

    ``twin_of`` (the source's real path) marks the file as the twin
    :class:`~mmkd.engine.hooks.StudentCheckpointHook` wrote, so the hook later replaces or
    removes only files it wrote itself.
    """
    if use_ema:
        if 'ema_state_dict' not in checkpoint:
            raise KeyError('use_ema=True but the checkpoint has no ema_state_dict '
                           '(was EMAHook enabled?)')
        state = checkpoint['ema_state_dict']
    else:
        state = checkpoint.get('state_dict', checkpoint)
    student = student_state_dict(_strip_module(state))
    if not student:
        raise ValueError(f"no '{STUDENT_PREFIX}*' weights in {source or 'the checkpoint'}: it "
                         'is not an mmkd DistillDetector checkpoint (a plain detector '
                         'checkpoint can be used as it is).')
    meta = checkpoint_meta(checkpoint)
    from ..version import __version__
    info = dict(version=__version__, exported_from=source, ema=use_ema)
    if twin_of is not None:
        info.update(writer=TWIN_WRITER, twin_of=twin_of)
    new_meta = dict(
        dataset_meta=_plain(meta.get('dataset_meta')),
        epoch=_plain(meta.get('epoch')), iter=_plain(meta.get('iter')), mmkd=info)
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
    _refuse_same_file(src, dst, 'publish')
    checkpoint = load_checkpoint_file(src, 'training')
    state = OrderedDict((k, v.detach().cpu().half() if half and v.is_floating_point()
                         else v.detach().cpu().clone())
                        for k, v in extract_state_dict(checkpoint, src, 'training').items())
    meta = checkpoint_meta(checkpoint)
    from ..version import __version__
    new_meta = dict(dataset_meta=_plain(meta.get('dataset_meta')),
                    epoch=_plain(meta.get('epoch')), iter=_plain(meta.get('iter')),
                    mmkd=dict(version=__version__, published_from=osp.basename(src),
                              fp16=half, **_plain(extra_meta or {})))
    return save_atomic(dict(meta=new_meta, state_dict=state), dst)


def student_path_for(path: str) -> str:
    """``work_dir/epoch_12.pth`` -> ``work_dir/epoch_12_student.pth``."""
    root, ext = osp.splitext(path)
    return f'{root}_student{ext or ".pth"}'


def _refuse_same_file(src: str, dst: str, what: str) -> None:
    if osp.exists(dst) and osp.exists(src) and osp.samefile(src, dst):
        raise ValueError(f"{what}: the output '{dst}' is the input checkpoint itself; writing "
                         'it would replace the training checkpoint (optimizer, schedulers, '
                         'distillation modules) with a student-only file. Choose another '
                         'output path.')


def export_student_checkpoint(src: str, dst: Optional[str] = None, use_ema: bool = False,
                              twin: bool = False) -> str:
    """Write the student-only twin of the mmkd checkpoint ``src`` atomically; returns its path.

    Refuses to write onto ``src`` itself. ``twin`` marks the output as written by
    :class:`~mmkd.engine.hooks.StudentCheckpointHook` (see :func:`make_student_checkpoint`).
    """
    dst = dst or student_path_for(src)
    _refuse_same_file(src, dst, 'export_student')
    checkpoint = load_checkpoint_file(src, 'mmkd')
    out = make_student_checkpoint(checkpoint, use_ema=use_ema, source=osp.basename(src),
                                  twin_of=osp.realpath(src) if twin else None)
    return save_atomic(out, dst)
