# Faster R-CNN R101-FPN 2x (39.8 box AP) -> R50-FPN 2x on COCO with the foundation losses:
# FPN feature imitation with GT-box foreground/background terms, and RoI classifier KL (T=2).
# 8 GPUs x 2 images: bash tools/dist_train.sh configs/kd/faster_rcnn_r101_r50_fpn_feat_kl_2x_coco.py 8
# Teacher checkpoint: see checkpoints/README.md.
# Settings: configs/_base_/methods/feat_kl.py.
_base_ = ['../_base_/pairs/faster_rcnn_r101_r50_2x.py', '../_base_/methods/feat_kl.py']
model = dict(
    distill_losses=dict(loss_kd_fpn=_base_.feat_kl_fpn, loss_kd_roi_kl=_base_.feat_kl_roi))
