"""What differs across the supported torch versions (2.0 ... 2.13), in one place.

Safe checkpoint loading is the main difference:

* torch >= 2.4 has an allow-list for ``torch.load(weights_only=True)``
  (``torch.serialization.add_safe_globals``); mmkd adds exactly the types mmengine training
  checkpoints pickle (:func:`mmkd.utils.checkpoint.allow_mmengine_checkpoint_types`).
* torch 2.0 - 2.3 have ``weights_only=True`` but no allow-list, and their ``weights_only``
  unpickler cannot rebuild any other class at all, so mmengine's own checkpoints (their message
  hub holds ``HistoryBuffer`` objects) cannot be loaded that way. There mmkd loads through
  :data:`restricted_pickle`, a pickle module whose unpickler resolves exactly the same globals as
  on torch >= 2.4 (torch's own weights-only set plus what mmkd allow-lists) and refuses every
  other one, before anything is called. TorchScript archives, which ``torch.load`` would hand
  to ``torch.jit.load``, are refused too. No arbitrary pickle is ever executed on any version.
* torch < 2.6 loads with ``weights_only=False`` *by default*: every load mmkd makes names its
  mode, and :func:`install_mmengine_safe_loader` routes mmengine's own local checkpoint loads
  (``load_from``, ``resume``, ``init_cfg=dict(type='Pretrained', checkpoint=PATH)``) through
  :func:`safe_torch_load` as well.
* ``torch.load(mmap=...)`` exists from torch 2.1; on 2.0 the file is read instead.

Mixed precision: ``torch.amp.GradScaler`` exists from torch 2.3, ``torch.cuda.amp.GradScaler``
is deprecated from 2.4 on; :func:`cuda_grad_scaler` picks the right one.
"""
from __future__ import annotations

import _compat_pickle
import inspect
import io
import os
import pickle
import re
import types
import zipfile
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import torch

__all__ = ['TORCH_VERSION', 'HAS_SAFE_GLOBALS', 'WEIGHTS_ONLY_BY_DEFAULT', 'SUPPORTS_MMAP',
           'add_safe_globals', 'safe_torch_load', 'restricted_pickle', 'cuda_grad_scaler',
           'install_mmengine_safe_loader']


def _version_tuple(version: str) -> Tuple[int, int]:
    m = re.match(r'(\d+)\.(\d+)', version)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


#: ``(major, minor)`` of the running torch.
TORCH_VERSION: Tuple[int, int] = _version_tuple(torch.__version__)
#: torch >= 2.4: ``torch.serialization.add_safe_globals`` exists.
HAS_SAFE_GLOBALS: bool = hasattr(torch.serialization, 'add_safe_globals')
#: torch >= 2.6: a bare ``torch.load(f)`` is a ``weights_only`` load.
WEIGHTS_ONLY_BY_DEFAULT: bool = TORCH_VERSION >= (2, 6)
#: torch >= 2.1: ``torch.load(..., mmap=True)``.
SUPPORTS_MMAP: bool = 'mmap' in inspect.signature(torch.load).parameters

# ---- the allow-list --------------------------------------------------------------------------
#: What mmkd allow-lists beyond torch's own set: ``'module.name' -> object``. Filled by
#: :func:`add_safe_globals` (on every torch version; torch >= 2.4 gets the same list).
_MMKD_SAFE_GLOBALS: Dict[str, Any] = {}


def _global_name(obj: Any) -> str:
    return f'{obj.__module__}.{obj.__qualname__}'


def add_safe_globals(entries: Iterable[Union[Any, Tuple[Any, str]]]) -> None:
    """Allow-list ``entries`` for safe loading, on every torch version.

    Args:
        entries: classes/functions, or ``(stand_in, 'module.name')`` pairs that resolve the global
            ``module.name`` of a checkpoint to ``stand_in`` (torch >= 2.4's convention).
    """
    entries = list(entries)
    for entry in entries:
        if isinstance(entry, tuple):
            obj, name = entry
        else:
            obj, name = entry, _global_name(entry)
        _MMKD_SAFE_GLOBALS[name] = obj
    if HAS_SAFE_GLOBALS:
        torch.serialization.add_safe_globals(entries)


def _torch_default_globals() -> Dict[str, Any]:
    """torch's own weights-only set, as torch >= 2.4 has it, on the running torch."""
    allowed: Dict[str, Any] = {}
    try:
        from torch import _weights_only_unpickler
        allowed.update(_weights_only_unpickler._get_allowed_globals())
    except (ImportError, AttributeError):  # private API; the explicit set below still applies
        pass
    # torch 2.0 - 2.3 lack some of torch >= 2.4's entries (e.g. torch.bool, torch.device):
    # add them so that the same checkpoints load on every supported version.
    for name in dir(torch):
        obj = getattr(torch, name, None)
        if isinstance(obj, torch.dtype):
            allowed[f'torch.{name}'] = obj
    import _codecs
    import collections
    allowed.update({
        'torch.device': torch.device, 'torch.Size': torch.Size,
        'collections.OrderedDict': collections.OrderedDict,
        'collections.Counter': collections.Counter, 'builtins.set': set,
        'builtins.frozenset': frozenset, 'builtins.complex': complex,
        'builtins.bytearray': bytearray, '_codecs.encode': _codecs.encode,
        'torch._utils._rebuild_tensor_v2': torch._utils._rebuild_tensor_v2,
        'torch._utils._rebuild_parameter': torch._utils._rebuild_parameter,
        'torch.nn.parameter.Parameter': torch.nn.Parameter,
    })
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allow-listed globals (torch's weights-only set plus
    :func:`add_safe_globals`); any other global raises ``pickle.UnpicklingError`` before it is
    imported or called. Nothing reaches a callable except through :meth:`find_class`."""

    _allowed: Optional[Dict[str, Any]] = None

    def find_class(self, module: str, name: str) -> Any:
        # protocol-2 pickles (torch.save's) spell Python 3 names the Python 2 way
        # (__builtin__.getattr); map them back as pickle's own find_class does
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        full = f'{module}.{name}'
        if full in _MMKD_SAFE_GLOBALS:
            return _MMKD_SAFE_GLOBALS[full]
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = _torch_default_globals()
        if full in RestrictedUnpickler._allowed:
            return RestrictedUnpickler._allowed[full]
        raise pickle.UnpicklingError(
            f'Unsupported global: GLOBAL {full} was not an allowed global by default '
            '(mmkd restricted unpickler)')


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


def _restricted_loads(data: bytes, **kwargs: Any) -> Any:
    return RestrictedUnpickler(io.BytesIO(data), **kwargs).load()


#: A pickle module for ``torch.load(pickle_module=...)`` on torch < 2.4 (see the module doc).
restricted_pickle = types.ModuleType('mmkd_restricted_pickle')
restricted_pickle.Unpickler = RestrictedUnpickler  # type: ignore[attr-defined]
restricted_pickle.load = _restricted_load  # type: ignore[attr-defined]
restricted_pickle.loads = _restricted_loads  # type: ignore[attr-defined]
restricted_pickle.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]


def _refuse_torchscript(f: Any) -> None:
    """``torch.load`` hands a TorchScript archive to ``torch.jit.load`` unless ``weights_only``:
    the restricted path refuses it instead."""
    pos = f.tell() if hasattr(f, 'read') else None
    try:
        if not zipfile.is_zipfile(f):
            return
        with zipfile.ZipFile(f) as z:
            names = z.namelist()
    finally:
        if pos is not None:
            f.seek(pos)
    if any(n == 'constants.pkl' or n.endswith('/constants.pkl') for n in names):
        raise pickle.UnpicklingError('Unsupported global: the file is a TorchScript archive '
                                     '(code), not a checkpoint')


def safe_torch_load(f: Union[str, os.PathLike, Any], map_location: Any = 'cpu',
                    mmap: bool = False) -> Any:
    """``torch.load`` that never runs an arbitrary pickle, on every supported torch.

    torch >= 2.4: ``weights_only=True`` with mmkd's allow-list. torch 2.0 - 2.3: the
    :data:`restricted_pickle` module, which allows exactly the same globals. ``mmap`` is
    ignored where torch has no ``mmap`` (2.0). Errors are torch's/pickle's own
    (``pickle.UnpicklingError`` for a refused global, with ``Unsupported global`` in it).
    """
    kwargs: Dict[str, Any] = dict(map_location=map_location)
    if mmap and SUPPORTS_MMAP:
        kwargs['mmap'] = True
    if HAS_SAFE_GLOBALS:
        return torch.load(f, weights_only=True, **kwargs)
    _refuse_torchscript(f)
    # torch < 2.4: the restricted module does the refusing. (Its weights_only loader cannot
    # rebuild mmengine's HistoryBuffer, and torch forbids weights_only with a pickle_module.)
    return torch.load(f, pickle_module=restricted_pickle, **kwargs)


# ---- mixed precision -------------------------------------------------------------------------
def cuda_grad_scaler(**kwargs: Any) -> Any:
    """A CUDA ``GradScaler``: ``torch.amp.GradScaler('cuda')`` where it exists (torch >= 2.3),
    else ``torch.cuda.amp.GradScaler`` (deprecated from 2.4 on)."""
    amp = getattr(torch, 'amp', None)
    if amp is not None and hasattr(amp, 'GradScaler'):
        return amp.GradScaler('cuda', **kwargs)
    return torch.cuda.amp.GradScaler(**kwargs)


# ---- mmengine's own loads ----------------------------------------------------------------------
_INSTALLED: List[Callable] = []


def _mmengine_load_from_local(filename: str, map_location: Any = None) -> Any:
    """mmengine's local-file checkpoint scheme, through :func:`safe_torch_load`."""
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return safe_torch_load(filename, map_location=map_location)


def install_mmengine_safe_loader() -> None:
    """Make mmengine's ``CheckpointLoader`` load local files with :func:`safe_torch_load`.

    mmengine calls a bare ``torch.load(filename)``, which on torch < 2.6 unpickles anything.
    mmengine's own extension point (``CheckpointLoader.register_scheme(prefixes='',
    force=True)``) replaces its local loader; remote schemes (``http(s)://``,
    ``torchvision://``, ``open-mmlab://``) stay mmengine's. Called on ``import mmkd``.
    """
    if _INSTALLED:
        return
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', loader=_mmengine_load_from_local, force=True)
    _INSTALLED.append(_mmengine_load_from_local)
