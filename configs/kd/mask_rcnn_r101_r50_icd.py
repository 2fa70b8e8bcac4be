# ICD for Mask R-CNN: R101-FPN 2x teacher (40.8 box / 36.6 mask) -> R50-FPN student, mmdet 1x
# recipe, AdamW for the ICD modules. Paper: 38.6 / 35.2 -> 41.2 / 37.4.
# Evaluate with: python tools/test.py configs/kd/mask_rcnn_r101_r50_icd.py CKPT --eval bbox segm
_base_ = [
    'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
    '../_base_/distill_runtime.py',
    '../_base_/icd_runtime.py',
]
model = dict(
    _delete_=True,
    type='DistillDetector',
    student=_base_.model,
    teacher='mmdet::mask_rcnn/mask-rcnn_r101_fpn_2x_coco.py',
    teacher_ckpt=('checkpoints/mask_rcnn_r101_fpn_2x_coco_bbox_mAP-0.408__segm_mAP-0.366_'
                  '20200505_071027-14b391c7.pth'),
    # ICD's inheriting start: the student's neck and heads begin as the teacher's
    init_student_from_teacher=['neck', 'rpn_head', 'roi_head'],
    distill_losses=dict(
        loss_icd=dict(_base_.icd_loss, **_base_.icd_two_stage)))
optim_wrapper = dict(
    _delete_=True, constructor='DistillOptimWrapperConstructor',
    student=dict(_base_.optim_wrapper, clip_grad=_base_.icd_student_clip_grad),
    distill=_base_.icd_distill_optim)
param_scheduler = dict(_delete_=True, student=_base_.param_scheduler,
                       distill=_base_.icd_distill_schedule_12e)
train_dataloader = dict(dataset=dict(pipeline=[  # the release's multi-scale input
    _base_.icd_train_resize if step['type'] == 'Resize' else step
    for step in _base_.train_pipeline]))
