# DSIG: Faster R-CNN R50-FPN 2x teacher (38.4) -> R18-FPN, 1x multi-scale, 8 GPUs x 2 images.
# The R18 config adds FPN MSE (0.5), RoI logit KD (3.0, T = 1, mean over RoIs x classes) and
# box-regression KD (1.0) to edge 2.0 / fg 0.5 / bg 0.5. Paper (R50 teacher): 37.25.
_base_ = [
    'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
    '../_base_/dsig_coco_ms.py',
    '../_base_/students.py',
    '../_base_/distill_runtime.py',
]
student = _base_.model
student.backbone = _base_.r18_backbone
student.neck.in_channels = _base_.r18_channels
model = dict(
    _delete_=True,
    type='DistillDetector',
    student=student,
    teacher='mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py',
    teacher_ckpt=('checkpoints/faster_rcnn_r50_fpn_2x_coco_bbox_mAP-0.384_'
                  '20200504_210434-a5d8aa15.pth'),
    distill_losses=dict(
        loss_dsig=dict(type='StructuredInstanceGraphLoss', edge_weight=2.0, fg_weight=0.5,
                       bg_weight=0.5),
        loss_kd_fpn=dict(type='FeatureImitationLoss', level_reduction='sum', loss_weight=0.5),
        loss_kd_cls=dict(type='RoIClsKLLoss', rois='all', temperature=1.0,
                         reduction='classmean', loss_weight=3.0),
        loss_kd_reg=dict(type='RoIBoxRegKDLoss', loss_weight=1.0)))
train_dataloader = dict(dataset=dict(pipeline=_base_.dsig_ms_train_pipeline))
