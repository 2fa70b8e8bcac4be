"""Resolve config and checkpoint paths given as ``mmdet::``, absolute, or relative paths.

Relative paths are tried against the current directory first and then against the root of the
mmkd checkout, so ``configs/...`` and ``checkpoints/...`` work from any working directory (the
mmdet LD configs only work when launched from the repo root; we do not repeat that).
"""
from __future__ import annotations

import difflib
import os
import os.path as osp
from typing import List

from mmengine.utils import get_installed_path

#: Root of the mmkd checkout (the folder holding ``mmkd/``, ``configs/`` and ``checkpoints/``).
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def package_config_dir(package: str) -> str:
    """Folder of the configs an OpenMMLab package ships in its wheel (``<pkg>/.mim/configs``)."""
    try:
        root = get_installed_path(package)
    except Exception as exc:  # importlib raises several kinds here
        raise FileNotFoundError(
            f"'{package}::' config paths need the package '{package}' installed; "
            f'it could not be found ({exc}).') from exc
    mim = osp.join(root, '.mim', 'configs')
    return mim if osp.isdir(mim) else osp.join(root, 'configs')


def _close_matches(cfg_dir: str, rel: str, limit: int = 5) -> List[str]:
    """Config files under ``cfg_dir`` whose relative path resembles ``rel``."""
    candidates = []
    for dirpath, _, files in os.walk(cfg_dir):
        for name in files:
            if name.endswith('.py'):
                candidates.append(osp.relpath(osp.join(dirpath, name), cfg_dir))
    return difflib.get_close_matches(rel, candidates, n=limit, cutoff=0.5)


def resolve_path(path: str, what: str = 'file') -> str:
    """Return an existing absolute path for ``path`` or raise a FileNotFoundError naming the fix.

    Args:
        path: ``'pkg::rel/path.py'`` (a config shipped inside an installed package such as mmdet),
            an absolute path, or a path relative to the current directory or the mmkd checkout.
        what: Words for the error message, e.g. ``'student config'``.
    """
    if '::' in path:
        package, rel = path.split('::', 1)
        cfg_dir = package_config_dir(package)
        full = osp.join(cfg_dir, rel)
        if osp.isfile(full):
            return full
        hints = _close_matches(cfg_dir, rel)
        hint = f' Close matches: {", ".join(package + "::" + h for h in hints)}.' if hints else ''
        raise FileNotFoundError(
            f"{what} '{path}' not found: there is no '{rel}' in {cfg_dir}.{hint} "
            'Note that mmdet 3.x config names use dashes, e.g. faster-rcnn_r50_fpn_1x_coco.py.')
    expanded = osp.expanduser(path)
    tried = [osp.abspath(expanded)]
    if not osp.isabs(expanded):
        tried.append(osp.join(REPO_ROOT, expanded))
    for cand in tried:
        if osp.isfile(cand):
            return cand
    raise FileNotFoundError(f"{what} '{path}' not found; tried: {', '.join(tried)}.")
