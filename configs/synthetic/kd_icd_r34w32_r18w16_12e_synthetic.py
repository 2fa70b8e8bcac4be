# ICD on the built-in data: R34w32 teacher (128-ch FPN) -> R18w16 student (64-ch FPN), Faster
# R-CNN, 12 epochs. The student's value projection maps 64 -> 256 channels, so the widths need
# not match; for the same reason the "inherit" start (copying the teacher's neck and heads) is
# off here. The distillation warm-up (bypass) lasts the detector's 100-iteration LR warm-up.
_base_ = ['../_base_/synthetic_distill.py', '../_base_/icd_runtime.py']
model = dict(
    distill_losses=dict(
        loss_icd=dict(type='InstanceConditionalDistillLoss', mimic_weight=3.0,
                      max_instances=100, bypass_iters=100, inherit=False)))
optim_wrapper = dict(
    _delete_=True,
    constructor='DistillOptimWrapperConstructor',
    student=dict(type='OptimWrapper',
                 optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001),
                 clip_grad=dict(max_norm=35, norm_type=2)),
    distill=_base_.icd_distill_optim)
param_scheduler = dict(
    _delete_=True,
    student=[
        dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=100),
        dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
    ],
    distill=[dict(type='CosineAnnealingLR', T_max=12, by_epoch=True, begin=0, end=12,
                  convert_to_iter_based=True)])
