# GID for Faster R-CNN, mmkd's own two-stage design, not a paper recipe (the release has no
# two-stage selection, and the paper reports no two-stage number to compare with): R101-FPN 2x
# teacher (39.8) -> R50-FPN, 2x, 8 GPUs x 2 images. The candidates are the student's sampled
# RoIs, scored by both R-CNN heads on the same boxes, and the response term is a softmax KL
# on the RoIs overlapping a GI (docs/methods/gid.md); everything else uses the released
# RetinaNet settings (configs/_base_/methods/gid.py; pooling by the canonical rule, finest
# scale 56 on P2-P5). No published number exists for this variant.
_base_ = [
    '../_base_/pairs/faster_rcnn_r101_r50_2x.py',
    '../_base_/methods/gid.py',
]
model = dict(distill_losses=dict(loss_gid=_base_.gid_released))
