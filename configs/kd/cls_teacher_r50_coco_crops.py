# DICOD classifier teacher for COCO ("general" teacher): ResNet-50 (ImageNet init), global
# average pooling, an 80-way linear head, trained on 112x112 crops of the COCO train2017 objects
# (the paper's supplement S2), evaluated by top-1 on the val2017 object crops:
#   python tools/train_cls_teacher.py configs/kd/cls_teacher_r50_coco_crops.py
# Input convention: torchvision/ImageNet (RGB, mean/std in 0-255 units).
_base_ = 'mmdet::_base_/datasets/coco_detection.py'
num_classes = 80
model = dict(
    type='CropClassifier',
    num_classes=num_classes,
    data_preprocessor=dict(type='ImgDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    backbone=dict(type='ResNet', depth=50, num_stages=4, out_indices=(3, ), frozen_stages=-1,
                  norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False,
                  style='pytorch',
                  init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')))
crop_cfg = dict(crop_size=112, jitter=0.1, flip=True, min_size=8.0,
                # resize each image so its longer side is at most this before cropping (COCO
                # images are about 640 px; the SSD student sees them at 300x300)
                image_scale=None)
cls_train_cfg = dict(epochs=12, batch_size=128, optimizer='SGD', lr=0.05, weight_decay=1e-4,
                     label_smoothing=0.1, seed=0, num_threads=None)
