# As faster_rcnn_r101_r50_2x.py, with the student on mmdet's 1x recipe (12 epochs, lr steps at 8
# and 11): the R101-FPN 2x teacher (39.8 box AP) and the R50-FPN student.
_base_ = [
    'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
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
