# ICD for RetinaNet: R101-FPN 2x teacher (38.9) -> R50-FPN student, mmdet 1x recipe, AdamW for
# the ICD modules. Paper (detectron2, R101 3x teacher at 40.4, multi-scale): 37.4 -> 40.7.
_base_ = [
    'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
    '../_base_/distill_runtime.py',
    '../_base_/icd_runtime.py',
]
model = dict(
    _delete_=True,
    type='DistillDetector',
    student=_base_.model,
    teacher='mmdet::retinanet/retinanet_r101_fpn_2x_coco.py',
    teacher_ckpt='checkpoints/retinanet_r101_fpn_2x_coco_20200131-5560aee8.pth',
    # ICD's inheriting start: the student's neck and heads begin as the teacher's
    init_student_from_teacher=['neck', 'bbox_head'],
    distill_losses=dict(
        loss_icd=dict(_base_.icd_loss, **_base_.icd_one_stage)))
optim_wrapper = dict(
    _delete_=True, constructor='DistillOptimWrapperConstructor',
    student=dict(_base_.optim_wrapper, clip_grad=_base_.icd_student_clip_grad),
    distill=_base_.icd_distill_optim)
param_scheduler = dict(_delete_=True, student=_base_.param_scheduler,
                       distill=_base_.icd_distill_schedule_12e)
train_dataloader = dict(dataset=dict(pipeline=[  # the release's multi-scale input
    _base_.icd_train_resize if step['type'] == 'Resize' else step
    for step in _base_.train_pipeline]))
