# PKD (Cao et al., NeurIPS 2022): RetinaNet R101-FPN 2x teacher (38.9 box AP) -> R50-FPN, 2x,
# 8 GPUs x 2 images. No published R101 -> R50 RetinaNet number: MMRazor 1.x's RetinaNet row
# uses an X101-64x4d teacher (41.0), 37.4 -> 40.8, with loss_weight 10 on FPN levels 0-3
# (P3-P6), student maps resized on a size mismatch (none occurs here) and lr 0.01
# (configs/distill/mmdet/pkd); those settings are used here.
#   bash tools/dist_train.sh configs/kd/retinanet_r101_r50_pkd.py 8
_base_ = [
    '../_base_/pairs/retinanet_r101_r50_2x.py',
    '../_base_/methods/peer_losses.py',
]
model = dict(distill_losses=dict(loss_pkd=_base_.pkd_retinanet))
