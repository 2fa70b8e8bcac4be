# GID for Faster R-CNN: R101-FPN 2x teacher (39.8) -> R50-FPN, 2x, 8 GPUs x 2 images. The
# released code has no two-stage selection; here the candidates are the student's sampled RoIs,
# scored by both R-CNN heads on the same boxes (docs/methods/gid.md). Quoted GID result: 40.2.
_base_ = '../_base_/pairs/faster_rcnn_r101_r50_2x.py'
model = dict(
    distill_losses=dict(
        loss_gid=dict(type='GeneralInstanceDistillLoss', score_mode='max_diff',
                      num_instances=10, nms_iou=0.3, feat_weight=5e-3, relation_weight=40.0,
                      cls_weight=0.1, reg_weight=1.0)))
