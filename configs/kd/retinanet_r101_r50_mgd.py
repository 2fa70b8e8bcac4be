# MGD (Yang et al., ECCV 2022): RetinaNet R101-FPN 2x teacher (38.9 box AP) -> R50-FPN, 2x,
# 8 GPUs x 2 images, gradient clipping at 35. Official config
# (det/configs/distillers/mgd/retina_rx101_64x4d_distill_retina_r50_fpn_2x_coco.py): X101-64x4d
# teacher, 37.4 -> 41.0 (MGD det/README.md), alpha_mgd 2e-5, lambda_mgd 0.65 on all five FPN
# levels (P3-P7); those are used here, and, as the official recipe (and MMRazor's), the
# student's neck and head start from the teacher's weights (init_student_from_teacher). No
# published R101 -> R50 number.
#   bash tools/dist_train.sh configs/kd/retinanet_r101_r50_mgd.py 8
_base_ = [
    '../_base_/pairs/retinanet_r101_r50_2x.py',
    '../_base_/methods/peer_losses.py',
]
model = dict(init_student_from_teacher=_base_.retinanet_teacher_init,
             distill_losses=dict(loss_mgd=_base_.mgd_retinanet))
optim_wrapper = dict(clip_grad=_base_.fgd_mgd_clip_grad)
