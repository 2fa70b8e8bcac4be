# Runtime pieces every mmkd distillation config shares. With these, mmdet's own tools/train.py
# also runs mmkd configs; mmkd's tools/train.py adds the hooks itself when a config lacks them.
custom_imports = dict(imports=['mmkd'], allow_failed_imports=False)
custom_hooks = [
    dict(type='StudentCheckpointHook'),  # epoch_N_student.pth next to every checkpoint
    dict(type='EpochSeedHook'),  # exact resume: RNG streams keyed to the epoch
    dict(type='LossBalanceHook'),  # loss_balance.json; auto_balance state in checkpoints
    dict(type='ICDPriorHook'),  # fits ICD's fake-instance priors; does nothing without ICD
]
