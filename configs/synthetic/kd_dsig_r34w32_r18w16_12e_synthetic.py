# DSIG on the built-in data: R34w32 teacher -> R18w16 student, 12 epochs. DSIG compares pooled
# FPN features without an adapter, so both FPNs must have the same width: this variant widens
# the student's neck and heads to the teacher's 128 channels (the backbone stays R18w16).
# Weights: configs/_base_/methods/dsig.py (the R50 <- R101 ones).
_base_ = ['../_base_/synthetic_distill.py', '../_base_/methods/dsig.py']
model = dict(
    student=dict(_delete_=True,
                 config='configs/synthetic/faster_rcnn_r18w16_fpn_12e_synthetic.py',
                 neck=dict(out_channels=128),
                 rpn_head=dict(in_channels=128, feat_channels=128),
                 roi_head=dict(bbox_roi_extractor=dict(out_channels=128),
                               bbox_head=dict(in_channels=128))),
    distill_losses=dict(loss_dsig=_base_.dsig_loss))
