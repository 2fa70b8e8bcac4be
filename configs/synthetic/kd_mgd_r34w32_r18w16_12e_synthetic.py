# MGD on the built-in data: R34w32 teacher (128-ch FPN) -> R18w16 student (64-ch FPN), Faster
# R-CNN, 12 epochs. MGDLoss aligns the student with a 1x1 conv per level (64 -> 128). Settings
# of the official Faster R-CNN config (alpha_mgd 5e-7, lambda_mgd 0.45, levels 0-3), tuned for
# COCO; the loss is a sum over the map (docs/methods/peer_methods.md, "Scale").
_base_ = '../_base_/synthetic_distill.py'
model = dict(
    distill_losses=dict(
        loss_mgd=dict(type='MGDLoss', mask_ratio=0.45, levels=[0, 1, 2, 3], loss_weight=5e-7)))
