# Faster R-CNN sized for the 160 px synthetic data on a CPU: a narrow ResNet trained from
# scratch (no ImageNet weights are reachable offline), smaller anchors, fewer sampled RoIs and a
# fixed RoIAlign sampling_ratio (mmcv's CPU RoIAlign is single-threaded).
_base_ = 'mmdet::_base_/models/faster-rcnn_r50_fpn.py'
num_classes = 8
model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(depth=18, base_channels=16, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=64, num_outs=5),
    rpn_head=dict(in_channels=64, feat_channels=64,
                  anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=2), out_channels=64),
        bbox_head=dict(in_channels=64, fc_out_channels=256, num_classes=num_classes)),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=128)),
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)))
