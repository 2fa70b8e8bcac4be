# MGD (Yang et al., ECCV 2022): RetinaNet R101-FPN 2x teacher (38.9 box AP) -> R50-FPN, 2x,
# 8 GPUs x 2 images, gradient clipping at 35. Official config
# (det/configs/distillers/mgd/retina_rx101_64x4d_distill_retina_r50_fpn_2x_coco.py): X101-64x4d
# teacher, 37.4 -> 41.0 (MGD det/README.md), alpha_mgd 2e-5, lambda_mgd 0.65 on all five FPN
# levels (P3-P7); those are used here. No published R101 -> R50 number.
#   bash tools/dist_train.sh configs/kd/retinanet_r101_r50_mgd.py 8
_base_ = '../_base_/pairs/retinanet_r101_r50_2x.py'
model = dict(
    distill_losses=dict(
        loss_mgd=dict(type='MGDLoss', mask_ratio=0.65, loss_weight=2e-5)))
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
