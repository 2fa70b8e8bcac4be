# Global-Knowledge distillation (Tang et al., ECCV 2022): the settings of the released
# `faster_rcnn_coco_kd_config.py`, defined once for every GK config. A config inherits this next
# to its detector pair and writes
#   model = dict(distill_losses=dict(loss_gk=dict(**_base_.gk_loss, boxes=..., strides=...,
#                                                 pgm=_base_.gk_pgm)))
#   custom_hooks = _base_.custom_hooks + _base_.gk_hooks
# (the pair's runtime hooks, configs/_base_/distill_hooks.py, then GK's own).
# Conventions (docs/methods/global_knowledge.md, "Released code vs mmkd"): box descriptors are the
# mean over integer cells int(|x1|/s)..int(|x2|/s) inclusive; masks are painted on integer cells
# int(x1/s)..int(x2/s)-1, a later box overwriting an earlier one; negative robustness is kept in
# the fg term. mmkd's alternatives: descriptor='roi_align', mask_painting='cover_max',
# negative_r='clamp'.
gk_loss = dict(
    type='RobustDistillingModule',
    fg_weight=1.0,
    bg_weight=4.0,
    soft_weight=1.0,
    temperature=2.0,
    relation_weight=0.0,  # the released config; 5.0 enables the global relation term
    feat_schedule=dict(decay='linear', by='epoch'),  # 1 - epoch / max_epochs
    descriptor='int_crop',
    mask_painting='int_overwrite',
    negative_r='keep')
# PGM: per class up to 800 images holding it, its GT boxes over 30 px in both sides (original
# pixels), 10 prototypes, alpha 10, density bandwidth 0.1, 40 % least dense dropped.
gk_pgm = dict(mode='offline', num_prototypes=10, alpha=10.0, bandwidth=0.1, drop_ratio=0.4,
              min_size=30, max_samples=800)
# GK's own hook, after the runtime hooks (EpochSeedHook seeds the epoch before PGMHook draws).
gk_hooks = [
    dict(type='PGMHook', interval=1, batch_size=2),  # prototypes before every epoch
]
