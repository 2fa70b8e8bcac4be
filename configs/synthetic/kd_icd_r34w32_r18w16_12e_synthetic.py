# ICD on the built-in data: R34w32 teacher (128-ch FPN) -> R18w16 student (64-ch FPN), Faster
# R-CNN, 12 epochs. The student's value projection maps 64 -> 256 channels, so the widths need
# not match; for the same reason the inheriting start (model.init_student_from_teacher, copying
# the teacher's neck and heads) is off here. The distillation warm-up (bypass) lasts the
# detector's 100-iteration LR warm-up.
_base_ = ['../_base_/synthetic_distill.py', '../_base_/icd_runtime.py']
model = dict(
    distill_losses=dict(
        loss_icd=dict(dict(_base_.icd_loss, **_base_.icd_two_stage),
                      **_base_.synthetic_tuning.icd)))
optim_wrapper = dict(
    _delete_=True, constructor='DistillOptimWrapperConstructor',
    student=dict(_base_.optim_wrapper, clip_grad=_base_.icd_student_clip_grad),
    distill=_base_.icd_distill_optim)
param_scheduler = dict(_delete_=True, student=_base_.param_scheduler,
                       distill=_base_.icd_distill_schedule_12e)
