from .base import BaseDistillLoss
from .cwd import ChannelWiseDistillLoss
from .dense_head_kd import DenseHeadKDLoss
from .feature_imitation import FeatureImitationLoss
from .fgd import FGDLoss
from .functional import masked_sq_error, soft_label_kl
from .mgd import MGDLoss
from .pkd import PKDLoss
from .roi_cls_kl import RoIClsKLLoss
from .roi_reg_kd import RoIBoxRegKDLoss, class_deltas
from .weight_schedule import WeightSchedule

__all__ = ['BaseDistillLoss', 'ChannelWiseDistillLoss', 'DenseHeadKDLoss', 'FGDLoss',
           'FeatureImitationLoss', 'MGDLoss', 'PKDLoss', 'RoIBoxRegKDLoss', 'RoIClsKLLoss',
           'WeightSchedule', 'class_deltas', 'masked_sq_error', 'soft_label_kl']
