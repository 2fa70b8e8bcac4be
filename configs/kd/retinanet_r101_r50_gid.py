# GID (Dai et al., CVPR 2021): RetinaNet R101-FPN 2x teacher (38.9 box AP) -> R50-FPN, 2x
# schedule (the re-implementation's 180k iterations at batch 16), 8 GPUs x 2 images.
# Paper abstract: 36.2 -> 39.1. lambda_f 5e-3 and lambda_r 40 (code defaults), lambda_cls 0.1,
# lambda_reg 1.0 with an L1 (experiment configs). Checkpoints: checkpoints/README.md.
#   bash tools/dist_train.sh configs/kd/retinanet_r101_r50_gid.py 8
_base_ = '../_base_/pairs/retinanet_r101_r50_2x.py'
model = dict(
    distill_losses=dict(
        loss_gid=dict(type='GeneralInstanceDistillLoss', score_mode='max_diff', pre_topk=3000,
                      min_size=10, nms_iou=0.3, num_instances=10, feat_weight=5e-3,
                      relation_weight=40.0, cls_weight=0.1, reg_weight=1.0, reg_beta=0.0,
                      relation_scope='image')))
