# ICD for CondInst: R101-FPN teacher -> R50-FPN student, mmdet's 90k-iteration multi-scale recipe
# (iteration based), AdamW for the ICD modules. Paper (AdelaiDet): 39.7 / 35.7 -> 43.7 / 39.1.
# mmdet has no R101 CondInst: the teacher is its R50 config at depth 101; train it first with
#   bash tools/dist_train.sh configs/kd/condinst_r101_teacher.py 8
# and put its checkpoint at teacher_ckpt. Evaluate with --eval bbox segm.
_base_ = [
    'mmdet::condinst/condinst_r50_fpn_ms-poly-90k_coco_instance.py',
    '../_base_/distill_runtime.py',
    '../_base_/icd_runtime.py',
]
model = dict(
    _delete_=True,
    type='DistillDetector',
    student=_base_.model,
    teacher='configs/kd/condinst_r101_teacher.py',
    teacher_ckpt='checkpoints/condinst_r101_fpn_ms-poly-90k_coco_instance.pth',
    # ICD's inheriting start: the student's neck and heads begin as the teacher's
    init_student_from_teacher=['neck', 'bbox_head', 'mask_head'],
    distill_losses=dict(
        loss_icd=dict(_base_.icd_loss, **_base_.icd_one_stage)))
optim_wrapper = dict(
    _delete_=True, constructor='DistillOptimWrapperConstructor',
    student=dict(_base_.optim_wrapper, clip_grad=_base_.icd_student_clip_grad),
    distill=_base_.icd_distill_optim)
param_scheduler = dict(_delete_=True, student=_base_.param_scheduler,
                       distill=[dict(type='CosineAnnealingLR', T_max=90000, by_epoch=False,
                                     begin=0, end=90000)])
