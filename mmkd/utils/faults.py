"""Test-only fault injection: lets ``tests/test_faults.py`` kill a training at an exact point.

``MMKD_FAULT_AT=POINT:N`` makes the process kill itself with SIGKILL, like a node failure (no
clean-up, no ``finally``), the ``N``-th time it reaches ``POINT``. Nobody sets it outside the
tests; ``tools/train.py`` then adds :class:`~mmkd.engine.hooks.FaultInjectionHook`, which owns
every kill point but one, from outside the library code:

* ``train_iter`` / ``val_iter`` / ``train_epoch``: after a training iteration, a validation
  iteration (evaluation in progress), or a training epoch with its checkpoints saved;
* ``teacher_forward``: the teacher's backbone is called (a forward pre-hook the hook puts on it),
  i.e. inside a training iteration (after the student's forward, before the distillation losses)
  or inside the offline PGM pass.

The one seam inside the library is ``file_replace`` in :func:`mmkd.utils.atomic.replace_atomic`:
a file (a checkpoint, a student twin, a JSON report) completely written under its temporary name
and not yet renamed onto its final name. No hook runs between the two steps, so no hook can
reach that point. When ``MMKD_FAULT_AT`` is unset it costs one dictionary lookup per file
written.
"""
from __future__ import annotations

import os
import signal
from collections import Counter
from typing import Tuple

ENV = 'MMKD_FAULT_AT'
_calls: Counter = Counter()


def fault_spec() -> Tuple[str, int]:
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
