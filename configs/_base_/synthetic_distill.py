# Shared by every distillation config on the built-in data: the R18w16 student (its data,
# schedule and runtime), the R34w32 teacher trained 36 epochs (its checkpoint ships in
# checkpoints/synthetic/), and mmkd's hooks.
# A method config inherits this and sets model.distill_losses (and custom_hooks if it needs more).
_base_ = [
    '../synthetic/faster_rcnn_r18w16_fpn_12e_synthetic.py',
    './distill_runtime.py',
]
model = dict(
    _delete_=True,
    type='DistillDetector',
    student='configs/synthetic/faster_rcnn_r18w16_fpn_12e_synthetic.py',
    teacher='configs/synthetic/faster_rcnn_r34w32_fpn_36e_synthetic.py',
    teacher_ckpt='checkpoints/synthetic/faster_rcnn_r34w32_fpn_36e_synthetic.pth',
    distill_losses=dict())
