"""Test-only fault-injection seam: lets ``tests/test_faults.py`` kill a training at an exact point.

Inert unless the environment variable ``MMKD_FAULT_AT`` is set (nobody sets it outside the
tests; the cost when unset is one dictionary lookup per call). ``MMKD_FAULT_AT=POINT:N`` makes
the process kill itself with SIGKILL, like a node failure (no clean-up, no ``finally``), the
``N``-th time it reaches ``POINT``:

* ``teacher_forward``: a teacher input conversion, i.e. inside a training iteration (after the
  student's forward, before the distillation losses), or inside the offline PGM pass;
* ``checkpoint_write``: a checkpoint file written completely to its temporary name, before it
  is renamed into place (mmkd's runner checkpoints and student twins);
* ``train_iter`` / ``val_iter`` / ``train_epoch``: after a training iteration, a validation
  iteration (evaluation in progress), or a training epoch with its checkpoints saved
  (:class:`~mmkd.engine.hooks.FaultInjectionHook`, added by ``tools/train.py`` only when
  ``MMKD_FAULT_AT`` is set).
"""
from __future__ import annotations

import os
import signal
from collections import Counter

ENV = 'MMKD_FAULT_AT'
_calls: Counter = Counter()


def fault_spec() -> tuple:
    """``(point, n)`` from ``MMKD_FAULT_AT``, or ``('', 0)`` when unset."""
    spec = os.environ.get(ENV, '')
    if not spec:
        return '', 0
    point, _, n = spec.partition(':')
    return point, int(n or 1)


def fault_point(name: str) -> None:
    """Kill this process with SIGKILL on the ``N``-th arrival at ``name`` (see module doc)."""
    if ENV not in os.environ:
        return
    point, n = fault_spec()
    if point != name:
        return
    _calls[name] += 1
    if _calls[name] == n:
        os.kill(os.getpid(), signal.SIGKILL)
