"""ICD's "inheriting" start: the student's neck and heads begin as copies of the teacher's."""
from __future__ import annotations

from typing import List, Sequence

import torch
from mmengine.logging import print_log
from torch import nn


@torch.no_grad()
def inherit_from_teacher(student: nn.Module, teacher: nn.Module,
                         skip: Sequence[str] = ('backbone', 'data_preprocessor')
                         ) -> List[str]:
    """Copy every teacher tensor outside ``skip`` into the student entry of the same name
    (neck, RPN/RoI/dense/mask heads), and mark those student modules initialised so
    ``init_weights`` keeps the copies (``load_from`` and ``--resume`` still override them).

    All or nothing: a partial copy (say the classifier fc but not the convs feeding it) would
    be a silently wrong start.

    Returns:
        The copied keys.

    Raises:
        ValueError: when a teacher tensor has no student entry of the same name and shape
            (different neck widths or head types); nothing is copied then.
    """
    s_state = student.state_dict()
    t_state = {k: v for k, v in teacher.state_dict().items() if k.split('.')[0] not in skip}
    bad = [f'{k}: teacher {tuple(v.shape)}, student '
           f'{tuple(s_state[k].shape) if k in s_state else "missing"}'
           for k, v in t_state.items() if k not in s_state or s_state[k].shape != v.shape]
    if bad or not t_state:
        raise ValueError(f'inherit=True needs the student\'s neck and heads to have the teacher\'s '
                         f'shapes; {len(bad)} of {len(t_state)} tensors differ, e.g. {bad[:3]}. '
                         'Use inherit=False for this pair.')
    for k, v in t_state.items():
        s_state[k].copy_(v)
    copied = list(t_state)
    for name in {k.split('.')[0] for k in copied}:
        module = getattr(student, name, None)
        if isinstance(module, nn.Module):
            for m in module.modules():
                m._is_init = True
    print_log(f'ICD inherit: copied {len(copied)} teacher tensors into the student '
              f'({sorted({k.split(".")[0] for k in copied})})', logger='current')
    return copied
