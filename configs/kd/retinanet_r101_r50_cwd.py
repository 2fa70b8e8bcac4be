# CWD (Shu et al., ICCV 2021) on the FPN: RetinaNet R101-FPN 2x teacher (38.9 box AP) -> R50-FPN,
# 2x, 8 GPUs x 2 images. Published (pppppM/mmdetection-distiller README, X101-64x4d teacher,
# 2x): 37.4 -> 40.5 with tau 1, weight 5 on FPN levels 0-3 (P3-P6); those settings are used
# here. No published R101 -> R50 number.
#   bash tools/dist_train.sh configs/kd/retinanet_r101_r50_cwd.py 8
_base_ = [
    '../_base_/pairs/retinanet_r101_r50_2x.py',
    '../_base_/methods/peer_losses.py',
]
model = dict(distill_losses=dict(loss_cwd=_base_.cwd_retinanet))
