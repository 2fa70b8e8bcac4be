from .base import BaseDistillLoss
from .feature_imitation import FeatureImitationLoss
from .functional import masked_sq_error, soft_label_kl
from .roi_cls_kl import RoIClsKLLoss
from .weight_schedule import WeightSchedule

__all__ = ['BaseDistillLoss', 'FeatureImitationLoss', 'RoIClsKLLoss', 'WeightSchedule',
           'masked_sq_error', 'soft_label_kl']
