"""Load checkpoints written by mmdet 2.x into mmdet 3.x models.

Most mmdet 2.x checkpoints load into the mmdet 3.x model of the same architecture unchanged: the
model-zoo files mmdet 3.3 itself links for Faster R-CNN, RetinaNet, Mask R-CNN and FCOS are the
2020 "v2.0" files, and their module names (``backbone.layer1.0.conv1``,
``neck.lateral_convs.0.conv``, ``rpn_head.rpn_conv`` / ``rpn_cls`` / ``rpn_reg``,
``roi_head.bbox_head.shared_fcs.0`` / ``fc_cls`` / ``fc_reg``, ``bbox_head.cls_convs.0.conv`` /
``retina_cls`` / ``retina_reg``) are the mmdet 3.x names (``tests/test_mmdet2_compat.py`` builds
both layouts and checks that they are equal).

What differs is listed in :data:`MMDET2_RENAMES`. mmdet 3.x renames those keys itself inside
``load_state_dict`` (``AnchorFreeHead._load_from_state_dict``), but mmkd compares the keys
*before* loading, so that a wrong checkpoint is rejected with a clear message
(:func:`mmkd.utils.checkpoint.check_compatible`). :func:`upgrade_mmdet2_keys` therefore renames
them first, and only where the model lacks the old name and has the new one: a state dict that
already fits the model is returned unchanged.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Dict, Iterable, Pattern, Tuple

import torch

#: ``(pattern, replacement)`` for keys whose mmdet 2.x name differs from the mmdet 3.x one.
#: Early mmdet 2 anchor-free heads (FCOS and heads derived from it) named their predictors after
#: the head: ``bbox_head.fcos_cls`` / ``fcos_reg`` / ``fcos_centerness`` became ``conv_cls`` /
#: ``conv_reg`` / ``conv_centerness``.
MMDET2_RENAMES: Tuple[Tuple[str, str], ...] = (
    (r'^((?:[^.]+\.)*bbox_head\.)fcos_(cls|reg|centerness)\.', r'\1conv_\2.'),
)
_COMPILED: Tuple[Tuple[Pattern, str], ...] = tuple((re.compile(p), r) for p, r in MMDET2_RENAMES)


def mmdet2_key(key: str) -> str:
    """The mmdet 3.x name of an mmdet 2.x state-dict key (the key itself when unchanged)."""
    for pattern, repl in _COMPILED:
        new = pattern.sub(repl, key)
        if new != key:
            return new
    return key


def upgrade_mmdet2_keys(state: 'OrderedDict[str, torch.Tensor]',
                        model_keys: Iterable[str]) -> 'OrderedDict[str, torch.Tensor]':
    """Rename the mmdet 2.x keys of ``state`` that ``model_keys`` only knows by their mmdet 3.x
    name; every other key is kept as it is (order preserved).

    Args:
        state: a checkpoint's state dict.
        model_keys: the keys of the model it is loaded into (``model.state_dict().keys()``).

    Returns:
        The state dict with the renamed keys (a new dict when anything was renamed).
    """
    own = set(model_keys)
    renames: Dict[str, str] = {}
    for key in state:
        if key in own:
            continue
        new = mmdet2_key(key)
        if new != key and new in own and new not in state:
            renames[key] = new
    if not renames:
        return state
    return OrderedDict((renames.get(k, k), v) for k, v in state.items())


def upgrade_for(model: torch.nn.Module,
                state: 'OrderedDict[str, torch.Tensor]') -> 'OrderedDict[str, torch.Tensor]':
    """:func:`upgrade_mmdet2_keys` against ``model``'s own keys (the hook in ``load_strict``)."""
    return upgrade_mmdet2_keys(state, model.state_dict().keys())
