# The converged student of the benchmark's 'finetune' protocol on the built-in data: the R18w16
# student trained as long as the teacher (36 epochs, lr steps at 24 and 33). Every finetune run,
# the plain student included, starts from its weights and trains N more epochs.
# The trained weights ship as checkpoints/synthetic/faster_rcnn_r18w16_fpn_36e_synthetic.pth:
#   python tools/train.py configs/synthetic/faster_rcnn_r18w16_fpn_36e_synthetic.py
#   python tools/publish_checkpoint.py \
#       work_dirs/faster_rcnn_r18w16_fpn_36e_synthetic/epoch_36.pth \
#       checkpoints/synthetic/faster_rcnn_r18w16_fpn_36e_synthetic.pth --fp16 \
#       --data data/synthetic --config configs/synthetic/faster_rcnn_r18w16_fpn_36e_synthetic.py
# Without it (or when the data differ from the fingerprinted ones), tools/benchmark.py trains
# it first and caches it.
_base_ = './faster_rcnn_r18w16_fpn_12e_synthetic.py'
train_cfg = dict(max_epochs=36, val_interval=12)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=36, by_epoch=True, milestones=[24, 33], gamma=0.1),
]
default_hooks = dict(checkpoint=dict(interval=12, max_keep_ckpts=1))
