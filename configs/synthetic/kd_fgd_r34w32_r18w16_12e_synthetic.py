# FGD on the built-in data: R34w32 teacher (128-ch FPN) -> R18w16 student (64-ch FPN), Faster
# R-CNN, 12 epochs. FGDLoss aligns the student with a 1x1 conv per level (64 -> 128), as the
# official code does for different widths. The official Faster R-CNN R101 -> R50 settings
# (configs/_base_/methods/peer_losses.py: weights tuned for COCO, the released mask rule); its
# terms are sums over the map (docs/methods/peer_methods.md, "Scale"). The student does not
# start from the teacher: the Faster R-CNN recipe does not, and the widths differ.
_base_ = ['../_base_/synthetic_distill.py', '../_base_/methods/peer_losses.py']
model = dict(distill_losses=dict(loss_fgd=_base_.fgd_faster_rcnn))
