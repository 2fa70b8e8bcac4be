# DICOD on the built-in data: the SSD160 R18w16 student distilled from the R18w16 crop
# classifier (configs/synthetic/cls_teacher_r18w16_synthetic.py, trained by
# tools/train_cls_teacher.py), 12 epochs. Crops are 32x32 (the teacher's training size).
_base_ = [
    './ssd160_r18w16_12e_synthetic.py',
    '../_base_/distill_runtime.py',
    '../_base_/methods/dicod.py',
]
model = dict(
    _delete_=True,
    type='DistillDetector',
    student='configs/synthetic/ssd160_r18w16_12e_synthetic.py',
    teacher='configs/synthetic/cls_teacher_r18w16_synthetic.py',
    teacher_ckpt='checkpoints/synthetic/cls_teacher_r18w16_synthetic.pth',
    distill_losses=dict(
        loss_dicod=dict(_base_.dicod_released, crop_size=32)))
