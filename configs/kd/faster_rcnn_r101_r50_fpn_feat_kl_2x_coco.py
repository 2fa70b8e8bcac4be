# Faster R-CNN R101-FPN 2x (39.8 box AP) -> R50-FPN 2x on COCO with the foundation losses:
# FPN feature imitation with GT-box foreground/background terms, and RoI classifier KL (T=2).
# 8 GPUs x 2 images: bash tools/dist_train.sh configs/kd/faster_rcnn_r101_r50_fpn_feat_kl_2x_coco.py 8
# Teacher checkpoint: see checkpoints/README.md.
_base_ = [
    'mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py',
    '../_base_/distill_runtime.py',
]
teacher_ckpt = ('checkpoints/faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_'
                '20200504_210455-1d2dac9c.pth')
model = dict(
    _delete_=True,
    type='DistillDetector',
    student=_base_.model,
    teacher='mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py',
    teacher_ckpt=teacher_ckpt,
    distill_losses=dict(
        loss_kd_fpn=dict(type='FeatureImitationLoss', fg_mask='gt', fg_weight=1.0,
                         bg_weight=0.5, loss_weight=1.0),
        loss_kd_roi_kl=dict(type='RoIClsKLLoss', temperature=2.0, rois='pos', loss_weight=1.0)))
