# GID's released recipe (daixinghome/Distill_GID_detectron2, the six released RetinaNet configs),
# defined once for every GID config. Each value is GeneralInstanceDistillLoss's default too;
# they are spelled out so a config shows what it runs.
# * score_mode 'diff_max': |sigmoid(max z_t) - sigmoid(max z_s)|, the box of the more
#   confident model; top 3000, clip, keep sides strictly > 10 px, NMS 0.3, 10 per image;
# * feature weight 5e-4 on 10x10 RoIAlign features with no adapter (the release builds one but
#   never applies it), pooled by the canonical rule (224 px at P4: finest_scale 112 on P3-P7,
#   56 on P2-P5; finest_scale=None picks it from the strides);
# * relation weight 40 over all GIs of the batch; response cls 0.1 (BCE), reg 1.0 (L1).
gid_released = dict(
    type='GeneralInstanceDistillLoss', score_mode='diff_max', pre_topk=3000, min_size=10,
    strict_min_size=True, nms_iou=0.3, num_instances=10, feat_weight=5e-4,
    relation_weight=40.0, cls_weight=0.1, reg_weight=1.0, reg_beta=0.0, relation_scope='batch',
    adapter=None, roi_size=10, finest_scale=None)
