# Teacher: Faster R-CNN, ResNet-34 at 1/2 width (base 32 channels), FPN 128 channels.
_base_ = './faster_rcnn_r18w16_fpn_12e_synthetic.py'
model = dict(
    backbone=dict(depth=34, base_channels=32),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=128),
    rpn_head=dict(in_channels=128, feat_channels=128),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=128),
        bbox_head=dict(in_channels=128, fc_out_channels=512)))
