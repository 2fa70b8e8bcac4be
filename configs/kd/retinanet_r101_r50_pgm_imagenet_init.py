# Global-Knowledge distillation for RetinaNet R101 -> R50 with the student starting from the
# ImageNet backbone (mmdet's own init) instead of the converged R50 2x checkpoint. Everything
# else is retinanet_r101_r50_pgm.py.
_base_ = './retinanet_r101_r50_pgm.py'
model = dict(student_ckpt=None)
