# CWD (Shu et al., ICCV 2021) on the FPN: Faster R-CNN R101-FPN 2x teacher (39.8 box AP) ->
# R50-FPN, 2x, 8 GPUs x 2 images. No published Faster R-CNN number: the settings are MMRazor
# 1.x's cwd_fpn_frcnn_r101_frcnn_r50_1x_coco.py (tau 1, loss_weight 10, all five FPN levels),
# whose README reports no result for it.
#   bash tools/dist_train.sh configs/kd/faster_rcnn_r101_r50_cwd.py 8
_base_ = [
    '../_base_/pairs/faster_rcnn_r101_r50_2x.py',
    '../_base_/methods/peer_losses.py',
]
model = dict(distill_losses=dict(loss_cwd=_base_.cwd_faster_rcnn))
