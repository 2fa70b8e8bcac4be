# PKD (Cao et al., NeurIPS 2022): Faster R-CNN R101-FPN 2x teacher (39.8 box AP) -> R50-FPN, 2x
# schedule, 8 GPUs x 2 images. MMRazor 1.x README (configs/distill/mmdet/pkd), same pair and
# schedule: 38.4 -> 40.3. Its config: PKDLoss with loss_weight 6 on FPN levels 0-3 (P2-P5), the
# student map resized to the teacher's on a size mismatch (resize_stu; none occurs here).
#   bash tools/dist_train.sh configs/kd/faster_rcnn_r101_r50_pkd.py 8
_base_ = [
    '../_base_/pairs/faster_rcnn_r101_r50_2x.py',
    '../_base_/methods/peer_losses.py',
]
model = dict(distill_losses=dict(loss_pkd=_base_.pkd_faster_rcnn))
