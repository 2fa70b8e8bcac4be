# DICOD classifier teacher on the built-in data: ResNet-18 at 1/4 width (base 16 channels),
# global average pooling and a linear 8-way head, trained from scratch on 32x32 object crops by
#   python tools/train_cls_teacher.py configs/synthetic/cls_teacher_r18w16_synthetic.py \
#       --work-dir work_dirs/cls_teacher_r18w16_synthetic
# which writes cls_teacher.pth (load it with teacher_ckpt=... in a DICOD config).
# The data paths are the detection data set's (train/val splits of the same annotations).
_base_ = '../_base_/datasets/synthetic_detection.py'
num_classes = 8
model = dict(
    type='CropClassifier',
    num_classes=num_classes,
    # The teacher's input convention. distiller converts the student's batch to it, and
    # tools/train_cls_teacher.py normalises its crops with it.
    data_preprocessor=dict(type='ImgDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    backbone=dict(type='ResNet', depth=18, base_channels=16, num_stages=4, out_indices=(3, ),
                  frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=True),
                  norm_eval=False, style='pytorch', init_cfg=None))
# Crop data set and schedule of tools/train_cls_teacher.py.
crop_cfg = dict(
    crop_size=32,  # must equal DICODLoss.crop_size of the configs using this teacher
    jitter=0.1,  # random box shift/scale (fraction of the box size) on training crops
    flip=True,
    min_size=2.0,  # ignore annotations narrower or shorter than this (pixels)
    image_scale=None)  # None: crop the images as stored (the synthetic images are 160 px)
cls_train_cfg = dict(epochs=50, batch_size=64, optimizer='AdamW', lr=3e-3, weight_decay=0.05,
                     label_smoothing=0.0, seed=0, num_threads=None)
