# Global-Knowledge distillation (Tang et al., ECCV 2022): prototypes (PGM) + robustness-weighted
# distillation (RDM), the released recipe. Teacher Faster R-CNN R101-FPN 2x (39.8 box AP); the
# student R50-FPN starts, as in the paper, from the converged mmdet R50 2x checkpoint (38.4) and
# trains 24 more epochs (lr steps at 16 and 22, 500-iteration warm-up), 8 GPUs x 2 images:
#   bash tools/dist_train.sh configs/kd/faster_rcnn_r101_r50_pgm.py 8
# Paper: 38.4 -> 40.6. Both checkpoints: checkpoints/README.md (the student loads strictly).
# From ImageNet instead: faster_rcnn_r101_r50_pgm_imagenet_init.py.
_base_ = ['../_base_/pairs/faster_rcnn_r101_r50_2x.py', '../_base_/gk_released.py']
model = dict(
    student_ckpt=('checkpoints/faster_rcnn_r50_fpn_2x_coco_bbox_mAP-0.384_'
                  '20200504_210434-a5d8aa15.pth'),
    distill_losses=dict(
        loss_gk=dict(
            **_base_.gk_loss,
            boxes='pos_rois',  # the student's positive sampled RoIs (proposal_replace_gt)
            strides=[4, 8, 16, 32, 64],  # the RPN anchor strides, as the release
            pgm=_base_.gk_pgm)))
custom_hooks = _base_.custom_hooks + _base_.gk_hooks
