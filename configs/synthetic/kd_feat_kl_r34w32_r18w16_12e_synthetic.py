# Distil the synthetic R34w32 teacher into the R18w16 student with the two foundation losses:
# FPN feature imitation (1x1 adapters 64->128 ch, GT-box foreground/background terms) and the
# R-CNN classifier soft-label KL on the student's positive RoIs. The teacher checkpoint ships in
# checkpoints/synthetic/ (configs/_base_/synthetic_distill.py).
# Settings: configs/_base_/methods/feat_kl.py.
_base_ = ['../_base_/synthetic_distill.py', '../_base_/methods/feat_kl.py']
model = dict(
    distill_losses=dict(
        loss_kd_fpn=dict(_base_.feat_kl_fpn, adapter='conv1x1'),
        loss_kd_roi_kl=_base_.feat_kl_roi))
