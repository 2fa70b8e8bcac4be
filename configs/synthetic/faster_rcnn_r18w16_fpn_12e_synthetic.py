# Student: Faster R-CNN, ResNet-18 at 1/4 width (base 16 channels), FPN 64 channels.
_base_ = [
    '../_base_/models/faster_rcnn_synthetic.py',
    '../_base_/datasets/synthetic_detection.py',
    '../_base_/schedules/synthetic_12e.py',
    'mmdet::_base_/default_runtime.py',
]
default_hooks = dict(checkpoint=dict(interval=4, max_keep_ckpts=2), logger=dict(interval=20))
randomness = dict(seed=0)
