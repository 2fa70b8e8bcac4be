"""DICOD: distilling an image classifier into an object detector (Guo et al., NeurIPS 2021)."""
from .classifier import CropClassifier, LinearClsHead, build_crop_classifier
from .crop import (CLAMP_MODES, PADDING_MODES, box_affine, clamp_boxes, clamp_boxes_one_sided,
                   crop_and_resize)
from .dicod_loss import DICODLoss, Positives, dicod_cls_kl, teacher_target

__all__ = ['CLAMP_MODES', 'CropClassifier', 'DICODLoss', 'LinearClsHead', 'PADDING_MODES',
           'Positives', 'box_affine', 'build_crop_classifier', 'clamp_boxes',
           'clamp_boxes_one_sided', 'crop_and_resize', 'dicod_cls_kl', 'teacher_target']
