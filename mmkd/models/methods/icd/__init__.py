"""ICD: instance-conditional knowledge distillation (docs/methods/icd.md)."""
from .decoder import InstanceDecoder, head_layer_norm, weighted_value_mimic
from .icd_loss import InstanceConditionalDistillLoss
from .instances import (SCALE_BIN_SOURCES, InstanceBatch, InstanceEncoder, build_instances,
                        instance_sizes_px, num_slots, scale_bins)
from .prior_hook import ICDPriorHook
from .priors import FakeDraw, InstancePriors, iter_annotations
from .tokens import TokenSequence, flatten_levels, level_padding_mask

__all__ = ['FakeDraw', 'ICDPriorHook', 'InstanceBatch', 'InstanceConditionalDistillLoss',
           'InstanceDecoder', 'InstanceEncoder', 'InstancePriors', 'SCALE_BIN_SOURCES',
           'TokenSequence', 'build_instances', 'flatten_levels', 'head_layer_norm',
           'instance_sizes_px', 'iter_annotations', 'level_padding_mask', 'num_slots',
           'scale_bins', 'weighted_value_mimic']
