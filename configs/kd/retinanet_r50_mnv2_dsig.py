# DSIG for RetinaNet: R50-FPN 2x teacher (37.4) -> MobileNetV2-FPN, 1x multi-scale, 8 GPUs x 2.
# fg node 0.5, edge 1.0, FPN MSE 0.5 (logit terms off, as the paper's MNV2 config). Paper: 32.16.
_base_ = [
    'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
    '../_base_/dsig_coco_ms.py',
    '../_base_/distill_runtime.py',
]
student = _base_.model
student.backbone = dict(
    type='MobileNetV2', out_indices=(2, 4, 7), norm_cfg=dict(type='BN', requires_grad=True),
    init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://mmdet/mobilenet_v2'))
student.neck.in_channels = [32, 96, 1280]
student.neck.start_level = 0
model = dict(
    _delete_=True,
    type='DistillDetector',
    student=student,
    teacher='mmdet::retinanet/retinanet_r50_fpn_2x_coco.py',
    teacher_ckpt='checkpoints/retinanet_r50_fpn_2x_coco_20200131-fdb43119.pth',
    distill_losses=dict(
        loss_dsig=dict(type='StructuredInstanceGraphLoss', edge_weight=1.0, fg_weight=0.5),
        loss_kd_fpn=dict(type='FeatureImitationLoss', level_reduction='sum', loss_weight=0.5)))
optim_wrapper = dict(optimizer=dict(lr=0.01))
train_dataloader = dict(dataset=dict(pipeline=_base_.dsig_ms_train_pipeline))
