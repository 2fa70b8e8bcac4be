# ICD for Faster R-CNN: R101-FPN 2x teacher (39.8) -> R50-FPN student, mmdet 1x recipe
# (8 GPUs x 2 images) for the detector, AdamW for the ICD modules. Paper (detectron2, R101 3x
# teacher at 42.0, multi-scale): 37.9 -> 40.9. docs/methods/icd.md lists what differs here.
_base_ = [
    '../_base_/pairs/faster_rcnn_r101_r50_1x.py',
    '../_base_/icd_runtime.py',
]
model = dict(
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
