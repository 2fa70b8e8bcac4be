# ICD's second optimiser, shared by every ICD config. A config inherits this next to its
# detector config and sets
#   optim_wrapper = dict(_delete_=True, constructor='DistillOptimWrapperConstructor',
#                        student=<the detector's SGD wrapper>, distill=_base_.icd_distill_optim)
#   param_scheduler = dict(_delete_=True, student=[...], distill=[cosine over the run])
# The encoder, decoder and student value projection of the ICD loss (all under
# model.distill_losses) train with AdamW lr 1e-4, wd 1e-4 and grad max-norm 0.01, as in the
# paper's code; the detector keeps its own SGD.
icd_distill_optim = dict(
    type='OptimWrapper',
    params=['distill_losses'],
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=0.01))
# dist_train.sh: a DDP wrapper whose train step drives both optimisers.
model_wrapper_cfg = dict(type='DistillDataParallel')
