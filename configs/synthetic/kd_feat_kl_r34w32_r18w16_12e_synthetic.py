# Distil the synthetic R34w32 teacher into the R18w16 student with the two foundation losses:
# FPN feature imitation (1x1 adapters 64->128 ch, GT-box foreground/background terms) and the
# R-CNN classifier soft-label KL on the student's positive RoIs.
# The teacher checkpoint comes from the main job (tools/run_main_job.sh), or train it yourself:
#   python tools/train.py configs/synthetic/faster_rcnn_r34w32_fpn_12e_synthetic.py
#   python tools/export_student.py ... (not needed: a plain run's epoch_12.pth is the teacher)
_base_ = [
    './faster_rcnn_r18w16_fpn_12e_synthetic.py',
    '../_base_/distill_runtime.py',
]
model = dict(
    _delete_=True,
    type='DistillDetector',
    student='configs/synthetic/faster_rcnn_r18w16_fpn_12e_synthetic.py',
    teacher='configs/synthetic/faster_rcnn_r34w32_fpn_12e_synthetic.py',
    teacher_ckpt='checkpoints/synthetic/faster_rcnn_r34w32_fpn_12e_synthetic.pth',
    distill_losses=dict(
        loss_kd_fpn=dict(type='FeatureImitationLoss', adapter='conv1x1', fg_mask='gt',
                         fg_weight=1.0, bg_weight=0.5, loss_weight=1.0),
        loss_kd_roi_kl=dict(type='RoIClsKLLoss', temperature=2.0, rois='pos', loss_weight=1.0)))
