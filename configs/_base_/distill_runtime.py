# Runtime pieces every mmkd distillation config shares: mmkd's import and hooks
# (configs/_base_/distill_hooks.py, their one definition). A method with hooks of its own
# extends the list: custom_hooks = _base_.custom_hooks + [...].
_base_ = ['./distill_hooks.py']
custom_hooks = _base_.distill_hooks
