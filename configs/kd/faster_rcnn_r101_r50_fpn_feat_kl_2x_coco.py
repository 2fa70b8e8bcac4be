# Faster R-CNN R101-FPN 2x (39.8 box AP) -> R50-FPN 2x on COCO with the foundation losses:
# FPN feature imitation with GT-box foreground/background terms, and RoI classifier KL (T=2).
# 8 GPUs x 2 images: bash tools/dist_train.sh configs/kd/faster_rcnn_r101_r50_fpn_feat_kl_2x_coco.py 8
# Teacher checkpoint: see checkpoints/README.md.
_base_ = '../_base_/pairs/faster_rcnn_r101_r50_2x.py'
model = dict(
    distill_losses=dict(
        loss_kd_fpn=dict(type='FeatureImitationLoss', fg_mask='gt', fg_weight=1.0,
                         bg_weight=0.5, loss_weight=1.0),
        loss_kd_roi_kl=dict(type='RoIClsKLLoss', temperature=2.0, rois='pos', loss_weight=1.0)))
