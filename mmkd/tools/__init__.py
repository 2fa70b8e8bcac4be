"""mmkd's command-line tools, runnable from a checkout (``python tools/NAME.py``), after
``pip install`` (``python -m mmkd.tools.NAME`` or the ``mmkd-*`` console scripts) and through
``mim`` (``mim train mmkd CONFIG``: a built mmkd carries the scripts in ``mmkd/.mim/tools``).

The code of ``train``, ``test``, ``export_student``, ``make_synthetic_data`` and the torchrun
launchers (``dist_launch``, ``dist_train``, ``dist_test``) lives here; ``tools/NAME.py`` of a
checkout are thin wrappers. The other tools (``benchmark``, ``benchmark_speed``,
``publish_checkpoint``, ``train_cls_teacher``, ``visualize_pgm``) are still the scripts
``tools/NAME.py`` of mmkd's root (the checkout, or ``mmkd/.mim`` of a built mmkd, see
:mod:`mmkd.utils.paths`): ``python -m mmkd.tools.NAME`` runs that script. Either way there is one
copy of each tool.
"""
from __future__ import annotations

import os.path as osp
import runpy
import sys
from typing import Optional, Sequence


def run_tool_script(name: str, argv: Optional[Sequence[str]] = None) -> None:
    """Run ``<mmkd root>/tools/<name>.py`` as ``__main__`` with ``argv`` (default: this
    process's arguments), as ``python tools/<name>.py ARGS`` would from a checkout."""
    from mmkd.utils.paths import REPO_ROOT
    script = osp.join(REPO_ROOT, 'tools', f'{name}.py')
    if not osp.isfile(script):
        raise FileNotFoundError(
            f"mmkd tool '{name}' not found at {script}: this mmkd was installed without its "
            'tools. Reinstall it from a wheel or a checkout (pip install mmkd-*.whl).')
    args = list(sys.argv[1:] if argv is None else argv)
    saved = sys.argv
    sys.argv = [script, *args]
    try:
        runpy.run_path(script, run_name='__main__')
    finally:
        sys.argv = saved
