"""Work-around for dense heads that cannot predict under mmdet 3.3.0.

``BaseDenseHead._predict_by_feat_single`` reads ``self.loss_cls`` (to ask whether it has custom
class channels), but ``SSDHead`` computes its loss inline and never creates ``loss_cls``, so an
SSD detector fails at test time with ``'SSDHead' object has no attribute 'loss_cls'``
(open-mmlab/mmdetection#11780, #11305; the fix #11524 is not merged). mmkd gives such heads a
``loss_cls = None`` attribute: a plain attribute (no module, no parameter, nothing in the
state dict), for which mmdet's check reads as "no custom class channels", the behaviour the
heads had before that check was added. Exported checkpoints are unchanged and still load in
plain mmdet.
"""
from __future__ import annotations

from typing import List

from torch import nn


def add_missing_loss_cls(model: nn.Module) -> List[str]:
    """Give every dense head in ``model`` that lacks ``loss_cls`` the attribute ``None``, in
    place; returns the names of the patched modules (empty when none needed it)."""
    from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
    patched = []
    for name, module in model.named_modules():
        if isinstance(module, BaseDenseHead) and not hasattr(module, 'loss_cls'):
            module.loss_cls = None
            patched.append(name or type(module).__name__)
    return patched
