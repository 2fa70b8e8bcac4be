# CWD (Shu et al., ICCV 2021) on the FPN: RetinaNet R101-FPN 2x teacher (38.9 box AP) -> R50-FPN,
# 2x, 8 GPUs x 2 images. Published (pppppM/mmdetection-distiller README, X101-64x4d teacher,
# 2x): 37.4 -> 40.5 with tau 1, weight 5 on FPN levels 0-3 (P3-P6); those settings are used
# here. No published R101 -> R50 number.
#   bash tools/dist_train.sh configs/kd/retinanet_r101_r50_cwd.py 8
_base_ = [
    'mmdet::retinanet/retinanet_r50_fpn_2x_coco.py',
    '../_base_/distill_runtime.py',
]
model = dict(
    _delete_=True,
    type='DistillDetector',
    student=_base_.model,
    teacher='mmdet::retinanet/retinanet_r101_fpn_2x_coco.py',
    teacher_ckpt='checkpoints/retinanet_r101_fpn_2x_coco_20200131-5560aee8.pth',
    distill_losses=dict(
        loss_cwd=dict(type='ChannelWiseDistillLoss', tau=1.0, levels=[0, 1, 2, 3],
                      loss_weight=5.0)))
