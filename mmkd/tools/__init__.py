"""mmkd's command-line tools, runnable from a checkout (``python tools/NAME.py``), after
``pip install`` (``python -m mmkd.tools.NAME`` or the ``mmkd-*`` console scripts) and through
``mim`` (``mim train mmkd CONFIG``: the wheel carries the ``tools/`` wrappers in ``mmkd/.mim``).
Each ``tools/NAME.py`` of the checkout is a thin wrapper of ``mmkd.tools.NAME.main``.
"""
