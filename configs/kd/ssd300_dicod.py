# DICOD (Guo et al., NeurIPS 2021): SSD300-VGG16 student (mmdet 3.3's SSD300 COCO recipe:
# SGD lr 2e-3, 24 epochs of RepeatDataset x5, 8 GPUs x 8 images) distilled from a frozen
# ResNet-50 *image classifier* trained on COCO object crops in SSD's input convention.
# Released result: 25.6 -> 27.9 box AP on COCO val. Train the teacher first:
#   python tools/train_cls_teacher.py configs/kd/cls_teacher_r50_coco_crops_ssd.py \
#       --work-dir work_dirs/cls_teacher_r50_coco_crops_ssd
#   cp work_dirs/cls_teacher_r50_coco_crops_ssd/cls_teacher.pth checkpoints/dicod/
#   bash tools/dist_train.sh configs/kd/ssd300_dicod.py 8
# No TeacherEvalHook here: the teacher is a classifier and cannot be evaluated as a detector.
_base_ = [
    'mmdet::ssd/ssd300_coco.py', '../_base_/distill_hooks.py', '../_base_/methods/dicod.py'
]
model = dict(
    _delete_=True,
    type='DistillDetector',
    student=_base_.model,
    teacher='configs/kd/cls_teacher_r50_coco_crops_ssd.py',
    teacher_ckpt='checkpoints/dicod/cls_teacher_r50_coco_crops_ssd.pth',
    distill_losses=dict(
        loss_dicod=_base_.dicod_released))
# SSD's config already sets custom_hooks (mmengine refuses a key that two bases define), so
# this config takes mmkd's hooks from ../_base_/distill_hooks.py and keeps SSD's
# CheckInvalidLossHook; NumClassCheckHook is dropped (it expects a plain detector).
custom_hooks = _base_.distill_hooks + [
    dict(type='CheckInvalidLossHook', interval=50, priority='VERY_LOW'),
]
