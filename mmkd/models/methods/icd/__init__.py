"""ICD: instance-conditional knowledge distillation (docs/methods/icd.md)."""
from .decoder import InstanceDecoder, head_layer_norm, weighted_value_mimic
from .icd_loss import InstanceConditionalDistillLoss
from .instances import InstanceBatch, InstanceEncoder, build_instances, num_slots, scale_bins
from .prior_hook import ICDPriorHook
from .priors import InstancePriors, iter_annotations
from .tokens import TokenSequence, flatten_levels, level_padding_mask

__all__ = ['ICDPriorHook', 'InstanceBatch', 'InstanceConditionalDistillLoss', 'InstanceDecoder',
           'InstanceEncoder', 'InstancePriors', 'TokenSequence', 'build_instances',
           'flatten_levels', 'head_layer_norm', 'iter_annotations',
           'level_padding_mask', 'num_slots', 'scale_bins', 'weighted_value_mimic']
