# SSD student for the built-in data, cheap on a CPU: 160x160 input, ResNet-18 at 1/4 width
# (base 16 channels) from scratch, an SSD neck adding one stride-64 level, and SSD's softmax
# head (C + 1 outputs, 3:1 hard-negative mining) with anchors sized for 8-96 px objects.
_base_ = [
    '../_base_/datasets/synthetic_detection.py',
    '../_base_/schedules/synthetic_12e.py',
    'mmdet::_base_/default_runtime.py',
]
num_classes = 8
input_size = 160
model = dict(
    type='SingleStageDetector',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=1),
    backbone=dict(type='ResNet', depth=18, base_channels=16, num_stages=4,
                  out_indices=(1, 2, 3), frozen_stages=-1,
                  norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False,
                  style='pytorch', init_cfg=None),
    neck=dict(type='SSDNeck', in_channels=(32, 64, 128), out_channels=(32, 64, 128, 64),
              level_strides=(2, ), level_paddings=(1, ), l2_norm_scale=None),
    bbox_head=dict(
        type='SSDHead',
        in_channels=(32, 64, 128, 64),
        num_classes=num_classes,
        anchor_generator=dict(type='SSDAnchorGenerator', scale_major=False,
                              strides=[8, 16, 32, 64], ratios=[[2], [2, 3], [2, 3], [2]],
                              min_sizes=[10, 24, 48, 96], max_sizes=[24, 48, 96, 160]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                        target_stds=[0.1, 0.1, 0.2, 0.2])),
    train_cfg=dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5,
                      min_pos_iou=0., ignore_iof_thr=-1, gt_max_assign_all=False),
        sampler=dict(type='PseudoSampler'),
        smoothl1_beta=1., allowed_border=-1, pos_weight=-1, neg_pos_ratio=3, debug=False),
    test_cfg=dict(nms_pre=1000, nms=dict(type='nms', iou_threshold=0.45), min_bbox_size=0,
                  score_thr=0.02, max_per_img=100))
# fixed-size input, as SSD's anchors assume (same pipeline indices as the data set base)
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
default_hooks = dict(checkpoint=dict(interval=4, max_keep_ckpts=2), logger=dict(interval=20))
randomness = dict(seed=0)
