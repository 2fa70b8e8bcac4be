# The CondInst R101 teacher for configs/kd/condinst_r101_r50_icd.py: mmdet's R50 recipe with a
# ResNet-101 backbone (mmdet 3.3 ships no R101 CondInst config or checkpoint).
_base_ = 'mmdet::condinst/condinst_r50_fpn_ms-poly-90k_coco_instance.py'
model = dict(
    backbone=dict(depth=101,
                  init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')))
