# DSIG: Faster R-CNN R50-FPN 2x teacher (38.4) -> MobileNetV2-FPN, 1x multi-scale, 8 GPUs x 2.
# The R18 recipe (edge 2.0, fg 0.5, bg 0.5, FPN MSE 0.5, RoI logit KD 3.0, box KD 1.0) with a
# MobileNetV2 backbone. Paper (R50 teacher): 34.44.
_base_ = './faster_rcnn_r50_r18_dsig.py'
model = dict(
    student=dict(
        backbone=dict(_delete_=True, **_base_.mnv2_backbone),
        neck=dict(in_channels=_base_.mnv2_channels)))
