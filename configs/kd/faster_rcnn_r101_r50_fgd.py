# FGD (Yang et al., CVPR 2022): Faster R-CNN R101-FPN 2x teacher (39.8 box AP) -> R50-FPN, 2x,
# 8 GPUs x 2 images, gradient clipping at 35. Weights from the official
# fgd_faster_rcnn_r101_fpn_2x_distill_faster_rcnn_r50_fpn_2x_coco.py: T 0.5, alpha 5e-5,
# beta 2.5e-5, gamma 5e-5, lambda 5e-7 on FPN levels 0-3 (P2-P5). The FGD README's
# Faster R-CNN R50 row (38.4 -> 42.0) uses a Cascade Mask R-CNN X101-32x4d teacher; it gives no
# R101 -> R50 number. Masks by the released rule (mask_rule='released'). The teacher-initialised
# start (init_student_from_teacher) is recorded for the official RetinaNet recipes only; it is
# not used here.
#   bash tools/dist_train.sh configs/kd/faster_rcnn_r101_r50_fgd.py 8
_base_ = [
    '../_base_/pairs/faster_rcnn_r101_r50_2x.py',
    '../_base_/methods/peer_losses.py',
]
model = dict(distill_losses=dict(loss_fgd=_base_.fgd_faster_rcnn))
optim_wrapper = dict(clip_grad=_base_.fgd_mgd_clip_grad)
