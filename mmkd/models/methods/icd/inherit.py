"""ICD's "inheriting" start: the student's neck and heads begin as copies of the teacher's."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from mmengine.logging import print_log
from torch import nn


@torch.no_grad()
def inherit_from_teacher(student: nn.Module, teacher: nn.Module,
                         skip: Sequence[str] = ('backbone', 'data_preprocessor')
                         ) -> Tuple[List[str], List[str]]:
    """Copy every teacher tensor outside ``skip`` into the student entry of the same name and
    shape (neck, RPN/RoI/dense/mask heads), and mark those student modules initialised so
    ``init_weights`` keeps the copies (``load_from`` and ``--resume`` still override them).

    Returns:
        (copied keys, skipped keys whose name or shape has no match in the student).

    Raises:
        ValueError: when nothing matches (different neck widths, for example).
    """
    s_state = student.state_dict()
    copied, skipped = [], []
    for key, value in teacher.state_dict().items():
        if key.split('.')[0] in skip:
            continue
        if key in s_state and s_state[key].shape == value.shape:
            s_state[key].copy_(value)
            copied.append(key)
        else:
            skipped.append(key)
    if not copied:
        raise ValueError('inherit=True: no teacher weight outside the backbone matches a student '
                         'weight by name and shape (different neck widths or heads?). Use '
                         'inherit=False for this pair.')
    for name in {k.split('.')[0] for k in copied}:
        module = getattr(student, name, None)
        if isinstance(module, nn.Module):
            for m in module.modules():
                m._is_init = True
    print_log(f'ICD inherit: copied {len(copied)} teacher tensors into the student '
              f'({sorted({k.split(".")[0] for k in copied})}); {len(skipped)} had no match',
              logger='current')
    return copied, skipped
