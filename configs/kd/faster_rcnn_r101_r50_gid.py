# GID for Faster R-CNN: R101-FPN 2x teacher (39.8) -> R50-FPN, 2x, 8 GPUs x 2 images. The
# released code has no two-stage selection; here the candidates are the student's sampled RoIs,
# scored by both R-CNN heads on the same boxes (docs/methods/gid.md). Quoted GID result: 40.2.
_base_ = [
    'mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py',
    '../_base_/distill_runtime.py',
]
model = dict(
    _delete_=True,
    type='DistillDetector',
    student=_base_.model,
    teacher='mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py',
    teacher_ckpt=('checkpoints/faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_'
                  '20200504_210455-1d2dac9c.pth'),
    distill_losses=dict(
        loss_gid=dict(type='GeneralInstanceDistillLoss', score_mode='max_diff',
                      num_instances=10, nms_iou=0.3, feat_weight=5e-3, relation_weight=40.0,
                      cls_weight=0.1, reg_weight=1.0)))
