# DSIG: Faster R-CNN R50-FPN 2x teacher (38.4) -> MobileNetV2-FPN, 1x multi-scale, 8 GPUs x 2.
# Same loss weights as the R18 config. Paper (R50 teacher): 34.44.
_base_ = [
    'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
    '../_base_/dsig_coco_ms.py',
    '../_base_/distill_runtime.py',
]
student = _base_.model
student.backbone = dict(
    type='MobileNetV2', out_indices=(1, 2, 4, 7), norm_cfg=dict(type='BN', requires_grad=True),
    init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://mmdet/mobilenet_v2'))
student.neck.in_channels = [24, 32, 96, 1280]
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
