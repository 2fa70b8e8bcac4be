# DICOD with a two-stage student: Faster R-CNN R50-FPN (mmdet's 2x recipe) distilled from a
# frozen ResNet-50 image classifier ("general" teacher, ImageNet input convention; the
# DistillDetector converts the student's batch to it). The positives are the R-CNN head's
# positive RoIs: each inherits the teacher logits of its assigned GT (softmax over the 81
# R-CNN outputs, zero teacher mass on background) and its decoded class box is cropped for the
# localisation term. The paper reports Faster R-CNN results too [numbers not verified here].
#   python tools/train_cls_teacher.py configs/kd/cls_teacher_r50_coco_crops.py
#   bash tools/dist_train.sh configs/kd/faster_rcnn_r50_dicod.py 8
_base_ = [
    'mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py',
    '../_base_/distill_runtime.py',
    '../_base_/methods/dicod.py',
]
model = dict(
    _delete_=True,
    type='DistillDetector',
    student=_base_.model,
    teacher='configs/kd/cls_teacher_r50_coco_crops.py',
    teacher_ckpt='checkpoints/dicod/cls_teacher_r50_coco_crops.pth',
    distill_losses=dict(
        loss_dicod=_base_.dicod_released))
