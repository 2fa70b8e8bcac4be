# ICD for SOLOv2: R101-FPN ms 3x teacher -> R50-FPN student, mmdet 1x recipe, AdamW for the ICD
# modules. Paper: 34.6 -> 38.5 mask AP. mmdet publishes no checkpoint for the plain R101 SOLOv2
# (only R101-DCN): train the teacher first with
#   bash tools/dist_train.sh mmdet::solov2/solov2_r101_fpn_ms-3x_coco.py 8
# and put its checkpoint at teacher_ckpt. SOLOv2 has no box output: evaluate with --eval segm.
_base_ = [
    'mmdet::solov2/solov2_r50_fpn_1x_coco.py',
    '../_base_/distill_runtime.py',
    '../_base_/icd_runtime.py',
]
model = dict(
    _delete_=True,
    type='DistillDetector',
    student=_base_.model,
    teacher='mmdet::solov2/solov2_r101_fpn_ms-3x_coco.py',
    teacher_ckpt='checkpoints/solov2_r101_fpn_ms-3x_coco.pth',
    # ICD's inheriting start: the student's neck and heads begin as the teacher's
    init_student_from_teacher=['neck', 'mask_head'],
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
