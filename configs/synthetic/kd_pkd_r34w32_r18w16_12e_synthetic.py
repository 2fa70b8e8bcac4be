# PKD on the built-in data: R34w32 teacher (128-ch FPN) -> R18w16 student (64-ch FPN), Faster
# R-CNN, 12 epochs. Per-channel correlation pairs channels one to one, so a learned 1x1 adapter
# per level maps the student to 128 channels first. Weight 6 on levels 0-3, as MMRazor's
# Faster R-CNN config.
_base_ = '../_base_/synthetic_distill.py'
model = dict(
    distill_losses=dict(
        loss_pkd=dict(type='PKDLoss', adapter='conv1x1', levels=[0, 1, 2, 3],
                      loss_weight=6.0)))
