# MGD on the built-in data: R34w32 teacher (128-ch FPN) -> R18w16 student (64-ch FPN), Faster
# R-CNN, 12 epochs. MGDLoss aligns the student with a 1x1 conv per level (64 -> 128). Settings
# of the official Faster R-CNN config (configs/_base_/methods/peer_losses.py: alpha_mgd 5e-7,
# lambda_mgd 0.45, levels 0-3), tuned for COCO; the loss is a sum over the map
# (docs/methods/peer_methods.md, "Scale"). The student does not start from the teacher: the
# Faster R-CNN recipe does not, and the widths differ.
_base_ = ['../_base_/synthetic_distill.py', '../_base_/methods/peer_losses.py']
model = dict(distill_losses=dict(loss_mgd=_base_.mgd_faster_rcnn))
