"""Base class of every mmkd distillation loss."""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, FrozenSet, Mapping, Optional, Tuple, Union

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn

from ..utils.progress import TrainProgress
from .weight_schedule import WeightSchedule

if TYPE_CHECKING:
    from ..distill_context import DistillContext

LossOutput = Union[Tensor, Dict[str, Tensor]]


class BaseDistillLoss(BaseModule):
    """A distillation loss: an ``nn.Module`` built from the config of a DistillDetector.

    Subclasses implement :meth:`forward`, which takes the step's
    :class:`~mmkd.models.DistillContext` and returns the *unweighted* loss (a scalar, or a dict
    of named scalars). The distiller multiplies by ``loss_weight`` and the schedule factor.

    Class attributes a subclass sets to declare what it needs (checked at build time):
        needs: subset of ``{'student_rois', 'student_head', 'student_dense_targets',
            'teacher_roi_head', 'teacher_head'}``.
        requires_same_classes: False when teacher and student may have different class
            counts (e.g. a classification teacher).
        balance_exclude: the output terms (keys of the dict :meth:`forward` returns) that the
            loss-balance report leaves out because they never reach the student's parameters
            (ICD's ``aux_conf`` / ``aux_reg``, which train only ICD's own modules). They are
            logged and trained as configured, but never measured, at no per-iteration cost.
        term_weight_keys: ``{term: constructor option that weights it}`` (e.g.
            ``{'fg': 'fg_weight'}``), so the loss-balance warning suggests that option rather
            than ``loss_weight``, which scales every term of the loss. :meth:`term_weight`
            reads the option's current value.

    Args:
        loss_weight: constant weight.
        weight_schedule: kwargs of :class:`WeightSchedule` (warm-up, decay, stop).
        init_cfg: mmengine init config of the loss's own modules (adapters).
    """

    needs: FrozenSet[str] = frozenset()
    requires_same_classes: bool = True
    balance_exclude: Tuple[str, ...] = ()
    term_weight_keys: Mapping[str, str] = {}

    def __init__(self, loss_weight: float = 1.0, weight_schedule: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.loss_weight = float(loss_weight)
        self.schedule = WeightSchedule(**(weight_schedule or {}))

    def setup(self, student: nn.Module, teacher: nn.Module) -> None:
        """Check the models have what this loss needs and build modules that depend on them.

        Called once by the distiller after both models are built. Subclasses extend it
        (creating adapters sized from the models, for example) and call ``super().setup``.
        """
        name = type(self).__name__
        if 'student_rois' in self.needs and not getattr(student, 'with_roi_head', False):
            raise ValueError(f'{name} needs a two-stage student with an roi_head; '
                             f'{type(student).__name__} has none.')
        if 'teacher_roi_head' in self.needs and not getattr(teacher, 'with_roi_head', False):
            raise ValueError(f'{name} needs a two-stage teacher with an roi_head; '
                             f'{type(teacher).__name__} has none.')
        if 'student_dense_targets' in self.needs and not callable(
                getattr(getattr(student, 'bbox_head', None), 'get_targets', None)):
            raise ValueError(f'{name} needs an anchor-based dense student head (get_targets); '
                             f'{type(student).__name__} has none.')
        for role, model in (('student', student), ('teacher', teacher)):
            if f'{role}_head' in self.needs and getattr(model, 'bbox_head', None) is None:
                raise ValueError(f'{name} needs a {role} with a dense bbox_head; '
                                 f'{type(model).__name__} has none.')

    def term_weight(self, term: str) -> Optional[float]:
        """The current value of the option that weights ``term`` (see ``term_weight_keys``;
        the attribute of that name), or None when the term has no option of its own."""
        option = self.term_weight_keys.get(term)
        value = None if option is None else getattr(self, option, None)
        return None if value is None else float(value)

    def weight(self, progress: TrainProgress) -> float:
        """``loss_weight`` times the schedule factor at ``progress``."""
        return self.loss_weight * self.schedule(progress)

    def zero(self, like: Tensor) -> Tensor:
        """A zero loss that still touches this loss's parameters (keeps DDP's graph complete)."""
        z = like.new_zeros(())
        for p in self.parameters():
            z = z + p.sum() * 0.0
        return z

    def forward(self, ctx: 'DistillContext') -> LossOutput:  # pragma: no cover - abstract
        raise NotImplementedError


def require_finite(value: Tensor, what: str) -> Tensor:
    """Raise if a loss became NaN/Inf, naming the loss (cheaper to debug than a NaN model)."""
    if not torch.isfinite(value).all():
        raise FloatingPointError(f'{what} is not finite ({value.item()}); lower its loss_weight, '
                                 'check the teacher checkpoint, or use fp32 for this loss.')
    return value
