# FGD (Yang et al., CVPR 2022): RetinaNet R101-FPN 2x teacher (38.9 box AP) -> R50-FPN, 2x,
# 8 GPUs x 2 images, gradient clipping at 35. Weights from the official
# fgd_retina_r101_fpn_2x_distill_retina_r50_fpn_2x_coco.py: T 0.5, alpha 1e-3, beta 5e-4,
# gamma 5e-4, lambda 5e-6 on all five FPN levels (P3-P7). The FGD README's RetinaNet R50 row
# (37.4 -> 40.7) uses an X101-64x4d teacher; it gives no R101 -> R50 number. Masks by the
# released rule (mask_rule='released'), and, as the official recipe, the student's neck and
# head start from the teacher's weights (init_student_from_teacher).
#   bash tools/dist_train.sh configs/kd/retinanet_r101_r50_fgd.py 8
_base_ = [
    '../_base_/pairs/retinanet_r101_r50_2x.py',
    '../_base_/methods/peer_losses.py',
]
model = dict(init_student_from_teacher=_base_.retinanet_teacher_init,
             distill_losses=dict(loss_fgd=_base_.fgd_retinanet))
optim_wrapper = dict(clip_grad=_base_.fgd_mgd_clip_grad)
