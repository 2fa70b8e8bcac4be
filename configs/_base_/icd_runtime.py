# ICD's second optimiser, shared by every ICD config. A config inherits this next to its
# detector config and adds
#   optim_wrapper = dict(constructor='DistillOptimWrapperConstructor',
#                        distill=_base_.icd_distill_optim)
#   param_scheduler = dict(_delete_=True, student=_base_.param_scheduler,
#                          distill=_base_.icd_distill_schedule_12e)
# The detector keeps its own optimiser (the inherited top-level keys of optim_wrapper become
# the 'student' wrapper). The encoder, decoder and student value projection of the ICD loss
# (all under model.distill_losses) train with AdamW lr 1e-4, wd 1e-4, grad max-norm 0.01 and a
# cosine schedule over the run, as in the paper's code.
icd_distill_optim = dict(
    type='OptimWrapper',
    params=['distill_losses'],
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=0.01))
icd_distill_schedule_12e = [
    dict(type='CosineAnnealingLR', T_max=12, by_epoch=True, begin=0, end=12,
         convert_to_iter_based=True),
]
# dist_train.sh: a DDP wrapper whose train step drives both optimisers.
model_wrapper_cfg = dict(type='DistillDataParallel')
