"""DICOD: distilling an image classifier into an object detector (Guo et al., NeurIPS 2021)."""
from .classifier import CropClassifier, LinearClsHead, build_crop_classifier
from .crop import box_affine, clamp_boxes, crop_and_resize
from .dicod_loss import DICODLoss, Positives, dicod_cls_kl, teacher_target

__all__ = ['CropClassifier', 'DICODLoss', 'LinearClsHead', 'Positives', 'box_affine',
           'build_crop_classifier', 'clamp_boxes', 'crop_and_resize', 'dicod_cls_kl',
           'teacher_target']
