# GID (Dai et al., CVPR 2021), the released recipe: RetinaNet R101-FPN 2x teacher (38.9 box AP)
# -> R50-FPN, 2x schedule (the re-implementation's 180k iterations at batch 16), 8 GPUs x 2
# images. The settings of the six released configs (daixinghome/Distill_GID_detectron2,
# configs/_base_/methods/gid.py): score diff_max, feature weight 5e-4 with no adapter, relation
# over the whole batch, GI size filter > 10 px, pooling by the canonical rule (finest_scale 112
# on P3-P7). Paper abstract (its own R50 student and R101 teacher): 36.2 -> 39.1. mmkd's reading
# of the paper is retinanet_r101_r50_gid_paper_reading.py. Checkpoints: checkpoints/README.md.
#   bash tools/dist_train.sh configs/kd/retinanet_r101_r50_gid.py 8
_base_ = [
    '../_base_/pairs/retinanet_r101_r50_2x.py',
    '../_base_/methods/gid.py',
]
model = dict(distill_losses=dict(loss_gid=dict(_base_.gid_released, finest_scale=112)))
