# DSIG's training pipeline: multi-scale short side 640-800 (max 1333), flip. Used with mmdet's
# 1x schedule (12 epochs at 16 images = the paper's 180k iterations at batch 8, in images seen).
# A config that lists this base applies it with:
#   train_dataloader = dict(dataset=dict(pipeline=_base_.dsig_ms_train_pipeline))
dsig_ms_train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomChoiceResize',
         scales=[(1333, 640), (1333, 672), (1333, 704), (1333, 736), (1333, 768), (1333, 800)],
         keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
