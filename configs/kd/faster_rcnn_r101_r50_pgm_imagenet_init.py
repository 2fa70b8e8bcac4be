# Global-Knowledge distillation, Faster R-CNN R101 -> R50, with the student starting from the
# ImageNet backbone (mmdet's own init) instead of the converged R50 2x checkpoint the paper
# starts from. Everything else is faster_rcnn_r101_r50_pgm.py. Not comparable with the paper's
# 38.4 -> 40.6 (that is 24 more epochs on top of a trained student).
_base_ = './faster_rcnn_r101_r50_pgm.py'
model = dict(student_ckpt=None)
