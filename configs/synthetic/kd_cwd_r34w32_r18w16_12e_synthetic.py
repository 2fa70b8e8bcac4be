# CWD on the built-in data: R34w32 teacher (128-ch FPN) -> R18w16 student (64-ch FPN), Faster
# R-CNN, 12 epochs. Channels are paired one to one, so a learned 1x1 adapter per level maps the
# student to 128 channels. tau 1, weight 10 on all five levels, as MMRazor's Faster R-CNN config.
_base_ = '../_base_/synthetic_distill.py'
model = dict(
    distill_losses=dict(
        loss_cwd=dict(type='ChannelWiseDistillLoss', tau=1.0, adapter='conv1x1',
                      loss_weight=10.0)))
