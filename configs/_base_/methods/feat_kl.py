# mmkd's two foundation losses, defined once for their COCO and synthetic configs and the
# benchmark's 'feat_kl' preset: FPN feature imitation with GT-box foreground/background terms
# (a 1x1 adapter is added where the student's FPN is narrower than the teacher's), and the R-CNN
# classifier's soft-label KL (T = 2) on the student's positive RoIs (two-stage pairs only).
feat_kl_fpn = dict(type='FeatureImitationLoss', fg_mask='gt', fg_weight=1.0, bg_weight=0.5,
                   loss_weight=1.0)
feat_kl_roi = dict(type='RoIClsKLLoss', temperature=2.0, rois='pos', loss_weight=1.0)
