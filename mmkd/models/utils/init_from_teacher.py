"""Start student modules as copies of teacher modules ("inheriting").

The released ICD recipes, the official FGD and MGD RetinaNet recipes and MMRazor's MGD config
start the student's neck and head from the teacher's weights. :class:`DistillDetector` does it
for the modules its ``init_student_from_teacher`` option names (:func:`resolve_module_map`), with
:func:`copy_teacher_modules`.
"""
from __future__ import annotations

from typing import Dict, Mapping, Sequence, Union

import torch
from mmengine.logging import print_log
from torch import nn

ModuleMapSpec = Union[None, Sequence[str], Mapping[str, str]]


def resolve_module_map(spec: ModuleMapSpec, option: str = 'init_student_from_teacher'
                       ) -> Dict[str, str]:
    """``{student module name: teacher module name}`` from a config value.

    Args:
        spec: None (nothing), a list of module names present in both models (``['neck',
            'bbox_head']``), or a dict from student to teacher module names (dotted paths, e.g.
            ``{'roi_head.bbox_head': 'roi_head.bbox_head'}``).
        option: the option's name, for error messages.
    """
    if spec is None:
        return {}
    if isinstance(spec, str):
        raise TypeError(f'{option} must be a list of module names or a dict student -> teacher '
                        f"name, got the string {spec!r}; write [{spec!r}].")
    pairs = dict(spec) if isinstance(spec, Mapping) else {str(n): str(n) for n in spec}
    if not pairs:
        raise ValueError(f'{option} is empty: leave it None to copy nothing.')
    for s, t in pairs.items():
        if not isinstance(s, str) or not isinstance(t, str) or not s or not t:
            raise TypeError(f'{option}: module names must be non-empty strings, got {s!r}: {t!r}')
    names = sorted(pairs)
    for a in names:
        for b in names:
            if a != b and b.startswith(a + '.'):
                raise ValueError(f'{option}: {b!r} lies inside {a!r}; name each module once.')
    return pairs


def _submodule(model: nn.Module, name: str, role: str, option: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        tops = [n for n, _ in model.named_children()]
        raise ValueError(f'{option}: the {role} ({type(model).__name__}) has no module {name!r}; '
                         f'its top-level modules are {tops}.') from None


@torch.no_grad()
def copy_teacher_modules(student: nn.Module, teacher: nn.Module, module_map: Dict[str, str],
                         option: str = 'init_student_from_teacher',
                         log: bool = True) -> Dict[str, int]:
    """Copy each teacher module's parameters and buffers into the mapped student module.

    Strict and all or nothing: for every pair, both modules must hold exactly the same tensor
    names with the same shapes (a partial copy, say a classifier without the convs feeding it,
    would be a silently wrong start); everything is checked before anything is copied. The
    student modules are then marked initialised, so the runner's ``init_weights`` skips them
    (``load_from`` and ``--resume`` still override them).

    Args:
        student / teacher: the two models.
        module_map: ``{student module name: teacher module name}`` (:func:`resolve_module_map`).
        option: the option's name, for messages.
        log: log one line per copied module.

    Returns:
        ``{student module name: number of tensors copied}``.

    Raises:
        ValueError: a name that is not a module of its model, or tensors that differ in name or
            shape (the message lists them); nothing is copied then.
    """
    plan = []
    for s_name, t_name in module_map.items():
        s_mod = _submodule(student, s_name, 'student', option)
        t_mod = _submodule(teacher, t_name, 'teacher', option)
        s_state, t_state = s_mod.state_dict(), t_mod.state_dict()
        bad = [f'{k}: teacher {tuple(t_state[k].shape) if k in t_state else "missing"}, '
               f'student {tuple(s_state[k].shape) if k in s_state else "missing"}'
               for k in sorted(set(s_state) | set(t_state))
               if k not in s_state or k not in t_state or s_state[k].shape != t_state[k].shape]
        if bad or not t_state:
            raise ValueError(
                f'{option}: cannot copy teacher {t_name!r} into student {s_name!r}: '
                + (f'{len(bad)} of {len(set(s_state) | set(t_state))} tensors differ in name or '
                   f'shape, e.g. {bad[:3]}' if bad else 'the teacher module has no tensors')
                + '. Both modules need the same architecture and widths; remove this entry '
                'for this pair.')
        plan.append((s_name, t_name, s_mod, s_state, t_state))
    copied: Dict[str, int] = {}
    for s_name, t_name, s_mod, s_state, t_state in plan:
        for k, v in t_state.items():
            s_state[k].copy_(v)
        for m in s_mod.modules():
            m._is_init = True  # mmengine's init_weights skips initialised BaseModules
        copied[s_name] = len(t_state)
        if log:
            src = '' if s_name == t_name else f' from teacher.{t_name}'
            print_log(f'{option}: student.{s_name} starts from the teacher\'s weights{src} '
                      f'({len(t_state)} tensors, strict)', logger='current')
    return copied

