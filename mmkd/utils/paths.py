"""Resolve config and checkpoint paths: ``mmdet::``, ``mmkd::``, absolute or relative paths.

Relative paths are tried against the current directory first and then against mmkd's root, so
``configs/...`` and ``checkpoints/...`` work from any working directory (the mmdet LD configs only
work when launched from the repo root; we do not repeat that). mmkd's root is the checkout (a
source tree or an editable install), or, after ``pip install mmkd-*.whl``, the package's own
``mmkd/.mim`` folder, which holds the same ``configs/``, ``checkpoints/`` and ``tools/`` (see
setup.py). ``mmkd::REL`` is ``<root>/configs/REL`` in both cases.
"""
from __future__ import annotations

import difflib
import os
import os.path as osp
from typing import List

from mmengine.utils import get_installed_path

_PACKAGE_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: Where a built (non-editable) mmkd keeps its configs, checkpoints and tools (see setup.py).
MIM_ROOT = osp.join(_PACKAGE_DIR, '.mim')


def _find_root() -> str:
    """The checkout when mmkd runs from one, else the installed package's ``.mim`` folder."""
    checkout = osp.dirname(_PACKAGE_DIR)
    if osp.isdir(osp.join(checkout, 'configs')) and (
            osp.isfile(osp.join(checkout, 'pyproject.toml'))
            or osp.isfile(osp.join(checkout, 'setup.py'))):
        return checkout
    return MIM_ROOT if osp.isdir(osp.join(MIM_ROOT, 'configs')) else checkout


#: mmkd's root: the folder holding ``configs/`` and ``checkpoints/`` (the checkout, or
#: ``mmkd/.mim`` of an installed wheel).
REPO_ROOT = _find_root()


def package_config_dir(package: str) -> str:
    """Folder of the configs an OpenMMLab package ships in its wheel (``<pkg>/.mim/configs``);
    for ``mmkd`` itself, ``configs/`` of mmkd's root (checkout or ``.mim``)."""
    if package == 'mmkd':
        return osp.join(REPO_ROOT, 'configs')
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
        note = (' Note that mmdet 3.x config names use dashes, e.g. faster-rcnn_r50_fpn_1x_coco.py.'
                if package == 'mmdet' else '')
        raise FileNotFoundError(
            f"{what} '{path}' not found: there is no '{rel}' in {cfg_dir}.{hint}{note}")
    expanded = osp.expanduser(path)
    tried = [osp.abspath(expanded)]
    if not osp.isabs(expanded):
        tried.append(osp.join(REPO_ROOT, expanded))
    for cand in tried:
        if osp.isfile(cand):
            return cand
    # search the most specific existing folder (configs/x/ beats the current directory)
    hints = _local_close_matches(max(tried, key=lambda c: len(_existing_parent(c))))
    hint = f' Close matches: {", ".join(hints)}.' if hints else ''
    raise FileNotFoundError(f"{what} '{path}' not found; tried: {', '.join(tried)}.{hint}")


def _existing_parent(full: str) -> str:
    """The deepest existing folder above the absolute path ``full`` ('' if none)."""
    root = osp.dirname(full)
    while root and not osp.isdir(root):
        parent = osp.dirname(root)
        if parent == root:
            return ''
        root = parent
    return root


def _local_close_matches(full: str, limit: int = 5, max_files: int = 20000) -> List[str]:
    """Existing files resembling the missing absolute path ``full``: searched under its deepest
    existing parent folder (so a misspelt folder is found too), at most ``max_files`` files."""
    root = _existing_parent(full)
    if not root or osp.dirname(root) == root:  # never walk a whole file system
        return []
    rel = osp.relpath(full, root)
    ext = osp.splitext(full)[1]
    candidates: List[str] = []
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith('.') and d != '__pycache__']
        candidates += [osp.relpath(osp.join(dirpath, n), root) for n in files
                       if not ext or n.endswith(ext)]
        if len(candidates) > max_files:
            break
    # compare whole relative paths and file names: a misspelt name or a misspelt folder
    by_path = difflib.get_close_matches(rel, candidates, n=limit, cutoff=0.6)
    names = {}
    for c in candidates:
        names.setdefault(osp.basename(c), c)
    by_name = [names[n] for n in difflib.get_close_matches(osp.basename(rel), list(names),
                                                            n=limit, cutoff=0.75)]
    found = list(dict.fromkeys(by_path + by_name))[:limit]
    return [osp.join(root, c) for c in found]
