# DSIG for RetinaNet: R50-FPN 2x teacher (37.4) -> MobileNetV2-FPN, 1x multi-scale, 8 GPUs x 2.
# fg node 0.5, edge 1.0, FPN MSE 0.5; the dense logit/delta KD of the R18 recipe is off, as in
# the paper's MNV2 config. Paper: 32.16.
_base_ = './retinanet_r50_r18_dsig.py'
model = dict(
    student=dict(
        backbone=dict(_delete_=True, **_base_.mnv2_backbone_s8),
        neck=dict(in_channels=_base_.mnv2_channels_s8, start_level=0)),
    distill_losses=dict(
        _delete_=True,
        loss_dsig=dict(type='StructuredInstanceGraphLoss', edge_weight=1.0, fg_weight=0.5,
                       **_base_.dsig_one_stage_nodes),
        loss_kd_fpn=dict(type='FeatureImitationLoss', level_reduction='sum', loss_weight=0.5)))
