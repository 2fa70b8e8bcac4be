# GID on the built-in data: R34w32 teacher -> R18w16 student (Faster R-CNN), 12 epochs. Objects
# are small here, so general instances may be 4 px wide (10 px on COCO).
_base_ = '../_base_/synthetic_distill.py'
model = dict(
    distill_losses=dict(
        loss_gid=dict(type='GeneralInstanceDistillLoss', min_size=4, num_instances=10,
                      feat_weight=5e-3, relation_weight=40.0, cls_weight=0.1,
                      reg_weight=1.0)))
