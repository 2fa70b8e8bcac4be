# The Faster R-CNN pair several methods' COCO configs share: the R50-FPN student on mmdet's 2x
# recipe (24 epochs, lr steps at 16 and 22, 8 GPUs x 2 images) and the frozen R101-FPN 2x
# teacher (39.8 box AP; download: checkpoints/README.md). A method config inherits this file and
# sets model.distill_losses (and whatever else its recipe changes).
_base_ = [
    'mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py',
    '../distill_runtime.py',
]
model = dict(
    _delete_=True,
    type='DistillDetector',
    student=_base_.model,
    teacher='mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py',
    teacher_ckpt=('checkpoints/faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_'
                  '20200504_210455-1d2dac9c.pth'),
    distill_losses=dict())
