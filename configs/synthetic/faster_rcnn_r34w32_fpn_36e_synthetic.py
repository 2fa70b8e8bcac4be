# The benchmark's teacher: the R34w32 Faster R-CNN trained 3x as long as the students (36
# epochs, lr steps at 24 and 33), so that it is far enough ahead of them to teach (13.6 AP vs the
# 12-epoch student's ~4 on the built-in data; at 12 epochs it scores only ~2.5).
# The trained weights ship as checkpoints/synthetic/faster_rcnn_r34w32_fpn_36e_synthetic.pth
# (tools/publish_checkpoint.py of epoch_36.pth); retrain with
#   python tools/train.py configs/synthetic/faster_rcnn_r34w32_fpn_36e_synthetic.py
_base_ = './faster_rcnn_r34w32_fpn_12e_synthetic.py'
train_cfg = dict(max_epochs=36, val_interval=12)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=36, by_epoch=True, milestones=[24, 33], gamma=0.1),
]
default_hooks = dict(checkpoint=dict(interval=12, max_keep_ckpts=1))
