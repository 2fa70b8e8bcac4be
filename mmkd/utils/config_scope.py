"""``mmkd::`` config paths in mmengine configs, the way ``mmdet::`` works.

mmengine resolves ``_base_ = 'pkg::rel/path.py'`` only for the packages in its own table
(``mmengine.config.utils.MODULE2PACKAGE``), and then only for a non-editable install that keeps
its configs in ``<pkg>/.mim/configs``. :func:`register_mmkd_config_scope`, called on
``import mmkd``:

* adds ``mmkd`` to that table (so mmengine's own helpers accept the name), and
* makes ``Config._get_cfg_path`` resolve ``mmkd::REL`` with :func:`mmkd.utils.paths.resolve_path`,
  i.e. to ``configs/REL`` of mmkd's root: the checkout (source tree or ``pip install -e``) or the
  ``mmkd/.mim`` folder of an installed wheel. A missing file raises ``FileNotFoundError`` naming
  the folder searched and the close matches.

The inherited file then behaves like a local ``_base_`` (no ``_scope_`` is added: mmkd's configs
are mmdet configs and build in mmdet's registries, ``default_scope='mmdet'``).

Only ``_base_`` (and mmkd's own ``teacher=``/``student=`` model specs and tools) know ``pkg::``:
``Config.fromfile('mmkd::...')`` itself is not supported by mmengine; use
:func:`mmkd.utils.resolve_path` first.
"""
from __future__ import annotations

from typing import Optional, Tuple

SCOPE = 'mmkd'


def register_mmkd_config_scope() -> None:
    """Make ``mmkd::`` resolvable in mmengine configs (idempotent)."""
    from mmengine.config import Config
    from mmengine.config import utils as config_utils

    config_utils.MODULE2PACKAGE.setdefault(SCOPE, 'mmkd')  # PKG2PROJECT is the same dict
    original = Config.__dict__['_get_cfg_path']
    original = getattr(original, '__func__', original)
    if getattr(original, '_mmkd_scope', False):
        return

    def _get_cfg_path(cfg_path: str, filename: str) -> Tuple[str, Optional[str]]:
        if isinstance(cfg_path, str) and cfg_path.startswith(SCOPE + '::'):
            from .paths import resolve_path
            return resolve_path(cfg_path, f"_base_ of '{filename}'"), None
        return original(cfg_path, filename)

    _get_cfg_path._mmkd_scope = True  # type: ignore[attr-defined]
    _get_cfg_path.__doc__ = original.__doc__
    Config._get_cfg_path = staticmethod(_get_cfg_path)
