# DSIG (Chen et al., ICCV 2021): Faster R-CNN R101-FPN 2x teacher (39.8) -> R50-FPN, 1x with
# multi-scale training, 8 GPUs x 2 images. Paper (detectron2, R101 3x teacher at 42.0): 37.9 ->
# 40.57. Weights of the R50<-R101 config: edge 1.0, fg 0.5, bg 0.5. Checkpoints: checkpoints/README.md.
#   bash tools/dist_train.sh configs/kd/faster_rcnn_r101_r50_dsig.py 8
_base_ = [
    '../_base_/pairs/faster_rcnn_r101_r50_1x.py',
    '../_base_/dsig_coco_ms.py',
    '../_base_/methods/dsig.py',
]
model = dict(distill_losses=dict(loss_dsig=_base_.dsig_loss))
train_dataloader = dict(dataset=dict(pipeline=_base_.dsig_ms_train_pipeline))
