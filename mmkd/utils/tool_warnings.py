"""Silence the known third-party deprecation warnings in mmkd's command-line tools.

They come from the pinned stack, say nothing about the user's run and cannot be fixed from mmkd:
setuptools' ``pkg_resources`` notice (imported by mmengine's package utilities), torch's
``torch.jit`` deprecations (mmcv/mmdet decorate functions with them), and mmengine's own log
notices about its ``FileClient``/``HardDiskBackend`` aliases (its hooks still use them). Only
these exact messages are filtered, and only in the tools: the library and the test suite see every
warning, and ``-W``/``PYTHONWARNINGS`` switch the Python-warning filter off.
"""
from __future__ import annotations

import logging
import sys
import warnings

#: (message regex, category) of the filtered Python warnings.
KNOWN_WARNINGS = (
    (r'pkg_resources is deprecated as an API', UserWarning),
    (r'`torch\.jit\.script` is deprecated', DeprecationWarning),
    (r'`torch\.jit\.interface` is deprecated', DeprecationWarning),
)
#: Substrings of the filtered mmengine log records (logged at WARNING by mmengine itself).
KNOWN_LOG_MESSAGES = (
    '"FileClient" will be deprecated in future',
    '"HardDiskBackend" is the alias of "LocalBackend"',
)


def quiet_known_warnings() -> None:
    """Install the Python-warning filters (call before importing mmengine/mmdet)."""
    if sys.warnoptions:  # the user asked for specific warnings (-W / PYTHONWARNINGS)
        return
    for message, category in KNOWN_WARNINGS:
        warnings.filterwarnings('ignore', message=message, category=category)


class KnownDeprecationFilter(logging.Filter):
    """Drops the log records of :data:`KNOWN_LOG_MESSAGES`."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not any(m in text for m in KNOWN_LOG_MESSAGES)


def quiet_known_log_messages(logger: logging.Logger) -> None:
    """Attach :class:`KnownDeprecationFilter` to ``logger`` (a runner's MMLogger) once."""
    if not any(isinstance(f, KnownDeprecationFilter) for f in logger.filters):
        logger.addFilter(KnownDeprecationFilter())
