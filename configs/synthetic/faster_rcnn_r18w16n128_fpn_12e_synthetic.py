# The plain-student baseline of DSIG on the built-in data: the R18w16 student with its neck and
# heads widened to the teacher's 128 channels, exactly as configs/synthetic/
# kd_dsig_r34w32_r18w16_12e_synthetic.py builds its student, trained without distillation.
# The benchmark compares DSIG with it, so the wider neck is not counted as DSIG's gain.
_base_ = './faster_rcnn_r18w16_fpn_12e_synthetic.py'
model = dict(
    neck=dict(out_channels=128),
    rpn_head=dict(in_channels=128, feat_channels=128),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=128), bbox_head=dict(in_channels=128)))
