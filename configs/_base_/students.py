# Student backbones the COCO configs share (ImageNet-initialised, as mmdet's configs).
# Use: student.backbone = _base_.r18_backbone; student.neck.in_channels = _base_.r18_channels
r18_backbone = dict(
    type='ResNet', depth=18, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=1,
    norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True, style='pytorch',
    init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet18'))
r18_channels = [64, 128, 256, 512]
# MobileNetV2 at strides 4-32 (for Faster R-CNN's P2-P5) and 8-32 (RetinaNet's P3-P7 with
# neck.start_level=0).
mnv2_backbone = dict(
    type='MobileNetV2', out_indices=(1, 2, 4, 7), norm_cfg=dict(type='BN', requires_grad=True),
    init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://mmdet/mobilenet_v2'))
mnv2_channels = [24, 32, 96, 1280]
mnv2_backbone_s8 = dict(mnv2_backbone, out_indices=(2, 4, 7))
mnv2_channels_s8 = [32, 96, 1280]
