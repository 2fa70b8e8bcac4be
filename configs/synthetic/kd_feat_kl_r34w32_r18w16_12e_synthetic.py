# Distil the synthetic R34w32 teacher into the R18w16 student with the two foundation losses:
# FPN feature imitation (1x1 adapters 64->128 ch, GT-box foreground/background terms) and the
# R-CNN classifier soft-label KL on the student's positive RoIs. The teacher checkpoint ships in
# checkpoints/synthetic/ (configs/_base_/synthetic_distill.py).
_base_ = '../_base_/synthetic_distill.py'
model = dict(
    distill_losses=dict(
        loss_kd_fpn=dict(type='FeatureImitationLoss', adapter='conv1x1', fg_mask='gt',
                         fg_weight=1.0, bg_weight=0.5, loss_weight=1.0),
        loss_kd_roi_kl=dict(type='RoIClsKLLoss', temperature=2.0, rois='pos', loss_weight=1.0)))
