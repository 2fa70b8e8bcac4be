"""Check, on ``import mmkd``, that the installed stack is one mmkd supports.

The ranges are the ones in pyproject.toml (the ranges mmdet 3.x itself accepts). Each error
names the installed version, the supported range and the fix; it is raised before mmdet is
imported, whose own mmcv assertion gives no fix.
"""
from __future__ import annotations

import importlib
from typing import Callable, Dict, Optional, Tuple

#: package -> (minimum, maximum exclusive); keep in step with pyproject.toml.
SUPPORTED: Dict[str, Tuple[str, str]] = {
    'torch': ('2.0.0', '3.0.0'),
    'mmengine': ('0.7.1', '1.0.0'),
    'mmcv': ('2.0.0rc4', '2.2.0'),
    'mmdet': ('3.0.0', '3.4.0'),
}

_FIX = {
    'torch': 'install a torch >= 2.0 build for your CUDA (https://pytorch.org), then rebuild mmcv '
             'against it',
    'mmengine': 'pip install "mmengine>=0.7.1,<1.0"',
    'mmcv': 'install mmcv 2.1.0 (mmdet 3.3 refuses 2.2): `mim install "mmcv>=2.0.0rc4,<2.2.0"` '
            'takes a prebuilt wheel for your torch/CUDA where OpenMMLab publishes one; '
            'otherwise build it: `MMCV_WITH_OPS=1 pip install --no-build-isolation mmcv==2.1.0` '
            '(tools/setup_env.sh does this and caches the wheel)',
    'mmdet': 'pip install "mmdet>=3.0.0,<3.4.0"',
}


class DependencyError(ImportError):
    """The installed stack is outside what mmkd supports; the message says how to fix it."""


def installed_version(package: str) -> Optional[str]:
    """The installed distribution's version (``None`` if absent), without importing it."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover  (Python < 3.8)
        return None
    try:
        return version(package)
    except PackageNotFoundError:
        if package == 'mmcv':  # mmcv may come from a local build without metadata
            try:
                return importlib.import_module('mmcv').__version__
            except ImportError:
                return None
        return None


def _digits(version: str) -> Tuple:
    from mmengine.utils import digit_version
    return digit_version(version.split('+')[0])


def check_versions(versions: Optional[Dict[str, Optional[str]]] = None) -> None:
    """Raise :class:`DependencyError` for a package missing or outside :data:`SUPPORTED`.

    Args:
        versions: ``package -> version`` to check (default: the installed ones).
    """
    versions = versions if versions is not None else {
        p: installed_version(p) for p in SUPPORTED}
    problems = []
    for package, (low, high) in SUPPORTED.items():
        if package not in versions:
            continue
        got = versions[package]
        if got is None:
            problems.append(f'{package} is not installed (mmkd supports {package} >= {low}, '
                            f'< {high}); fix: {_FIX[package]}.')
        elif not _digits(low) <= _digits(got) < _digits(high):
            problems.append(f'{package} {got} is installed, but mmkd supports {package} >= '
                            f'{low}, < {high}; fix: {_FIX[package]}.')
    if problems:
        raise DependencyError('mmkd cannot run with this environment:\n  ' +
                              '\n  '.join(problems))


def check_known_conflicts(versions: Optional[Dict[str, Optional[str]]] = None) -> None:
    """Raise :class:`DependencyError` for version pairs inside the supported ranges that are known
    not to work together.

    mmengine < 0.8.5 formats configs with ``yapf.FormatCode(..., verify=True)``, a keyword that
    yapf 0.40.2 removed, so every training stops with ``TypeError: FormatCode() got an unexpected
    keyword argument 'verify'`` when the runner logs its config (mmengine 0.8.5 dropped the
    keyword; mmengine declares ``yapf`` without an upper bound).

    Args:
        versions: ``package -> version`` of ``mmengine`` and ``yapf`` (default: the installed).
    """
    versions = versions if versions is not None else {
        p: installed_version(p) for p in ('mmengine', 'yapf')}
    mmengine, yapf = versions.get('mmengine'), versions.get('yapf')
    if mmengine and yapf and _digits(mmengine) < _digits('0.8.5') \
            and _digits(yapf) >= _digits('0.40.2'):
        raise DependencyError(
            f'mmkd cannot run with this environment: mmengine {mmengine} calls yapf with '
            f'verify=True, which yapf {yapf} no longer accepts (every training would stop when '
            'it logs its config). Fix: pip install "yapf==0.40.1", or upgrade mmengine to '
            '>= 0.8.5.')


def _import_mmcv_ext() -> None:
    importlib.import_module('mmcv._ext')


def check_mmcv_ops(import_ext: Callable[[], None] = _import_mmcv_ext) -> None:
    """Raise :class:`DependencyError` when mmcv has no compiled ops (``mmcv-lite``, or a build
    without ``MMCV_WITH_OPS=1``, or one compiled for another torch)."""
    try:
        import_ext()
    except ImportError as exc:
        version = installed_version('mmcv') or installed_version('mmcv-lite') or '?'
        raise DependencyError(
            f'mmcv {version} is installed without usable compiled ops (importing mmcv._ext '
            f'failed: {exc}). mmkd needs them (RoIAlign, nms, the detectors of mmdet). Fix: '
            'uninstall mmcv-lite if present, then install a full mmcv built for this torch: '
            f'{_FIX["mmcv"]}. An "undefined symbol" error means mmcv was compiled for another '
            'torch: rebuild it.') from None


def check_environment() -> None:
    """The checks, as ``import mmkd`` runs them (the installed versions read once)."""
    versions = {p: installed_version(p) for p in (*SUPPORTED, 'yapf')}
    check_versions({p: versions[p] for p in SUPPORTED})
    check_known_conflicts(versions)
    check_mmcv_ops()
