# CWD on the built-in data: R34w32 teacher (128-ch FPN) -> R18w16 student (64-ch FPN), Faster
# R-CNN, 12 epochs. Channels are paired one to one, so a learned 1x1 adapter per level maps the
# student to 128 channels (the one setting added to the released ones). Otherwise MMRazor's
# Faster R-CNN settings (configs/_base_/methods/peer_losses.py): tau 1, weight 10, all levels.
_base_ = ['../_base_/synthetic_distill.py', '../_base_/methods/peer_losses.py']
model = dict(distill_losses=dict(loss_cwd=dict(_base_.cwd_faster_rcnn, adapter='conv1x1')))
