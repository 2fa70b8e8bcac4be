# The runtime pieces every mmkd distillation config shares, defined once: mmkd's import and its
# hooks. configs/_base_/distill_runtime.py sets them as custom_hooks; a config whose detector
# base already defines custom_hooks (mmengine refuses a key that two bases define) inherits
# this file instead and extends the list, e.g. configs/kd/ssd300_dicod.py:
#   custom_hooks = _base_.distill_hooks + [dict(type='CheckInvalidLossHook', ...)]
# A method's own hooks come after them (Global Knowledge: _base_.gk_hooks). With these, mmdet's
# own tools/train.py also runs mmkd configs; mmkd's tools/train.py adds the hooks itself when a
# config lacks them.
custom_imports = dict(imports=['mmkd'], allow_failed_imports=False)
distill_hooks = [
    dict(type='StudentCheckpointHook'),  # epoch_N_student.pth next to every checkpoint
    dict(type='EpochSeedHook'),  # exact resume: RNG streams keyed to the epoch
    dict(type='LossBalanceHook'),  # loss_balance.json; auto_balance state in checkpoints
    dict(type='ICDPriorHook'),  # fits ICD's fake-instance priors; does nothing without ICD
]
