# The RetinaNet pair several methods' COCO configs share: the R50-FPN student on mmdet's 2x
# recipe (24 epochs, 8 GPUs x 2 images) and the frozen R101-FPN 2x teacher (38.9 box AP;
# download: checkpoints/README.md). A method config inherits this file and sets
# model.distill_losses.
_base_ = [
    'mmdet::retinanet/retinanet_r50_fpn_2x_coco.py',
    '../distill_runtime.py',
]
model = dict(
    _delete_=True,
    type='DistillDetector',
    student=_base_.model,
    teacher='mmdet::retinanet/retinanet_r101_fpn_2x_coco.py',
    teacher_ckpt='checkpoints/retinanet_r101_fpn_2x_coco_20200131-5560aee8.pth',
    distill_losses=dict())
