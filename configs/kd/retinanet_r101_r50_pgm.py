# Global-Knowledge distillation for RetinaNet, released conventions: R101-FPN 2x teacher
# (38.9 box AP) -> R50-FPN student starting, as the paper, from the converged mmdet R50 2x
# checkpoint (37.4), 24 more epochs, 8 GPUs x 2 images. Paper table: 37.4 -> 39.8 (no RetinaNet
# config was released; the one-stage choices are in docs/methods/global_knowledge.md).
# Checkpoints: checkpoints/README.md. From ImageNet instead: retinanet_r101_r50_pgm_imagenet_init.py.
#   bash tools/dist_train.sh configs/kd/retinanet_r101_r50_pgm.py 8
_base_ = ['../_base_/pairs/retinanet_r101_r50_2x.py', '../_base_/gk_released.py']
model = dict(
    student_ckpt='checkpoints/retinanet_r50_fpn_2x_coco_20200131-fdb43119.pth',
    distill_losses=dict(
        loss_gk=dict(
            **_base_.gk_loss,
            boxes='auto',  # the positive anchors of the student's RetinaNet head
            strides=[8, 16, 32, 64, 128],  # the anchor strides of P3-P7
            pgm=_base_.gk_pgm)))
custom_hooks = _base_.custom_hooks + _base_.gk_hooks
