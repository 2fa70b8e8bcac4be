# DSIG for RetinaNet: R50-FPN 2x teacher (37.4) -> R18-FPN, 1x multi-scale, 8 GPUs x 2 images.
# Nodes are the student's own post-NMS detections (no background nodes), unclipped with no
# minimum size and pooled by the release's level rule (configs/_base_/methods/dsig.py); fg node
# 0.5, edge 1.0, FPN MSE 0.5, and, as the paper's R18 config, dense logit KD (softmax KL, T = 1,
# mean over non-ignored anchors x classes, weight 1) and L1 on the teacher's deltas of positive
# anchors (weight 1). Paper: 34.72.
_base_ = [
    'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
    '../_base_/dsig_coco_ms.py',
    '../_base_/students.py',
    '../_base_/distill_runtime.py',
    '../_base_/methods/dsig.py',
]
student = _base_.model
student.backbone = _base_.r18_backbone
student.neck.in_channels = _base_.r18_channels
model = dict(
    _delete_=True,
    type='DistillDetector',
    student=student,
    teacher='mmdet::retinanet/retinanet_r50_fpn_2x_coco.py',
    teacher_ckpt='checkpoints/retinanet_r50_fpn_2x_coco_20200131-fdb43119.pth',
    distill_losses=dict(
        loss_dsig=dict(type='StructuredInstanceGraphLoss', edge_weight=1.0, fg_weight=0.5,
                       **_base_.dsig_one_stage_nodes),
        loss_kd_fpn=dict(type='FeatureImitationLoss', level_reduction='sum', loss_weight=0.5),
        loss_kd_head=dict(type='DenseHeadKDLoss', cls_weight=1.0, reg_weight=1.0,
                          temperature=1.0)))
optim_wrapper = dict(optimizer=dict(lr=0.01))
train_dataloader = dict(dataset=dict(pipeline=_base_.dsig_ms_train_pipeline))
