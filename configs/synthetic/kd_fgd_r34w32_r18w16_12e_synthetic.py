# FGD on the built-in data: R34w32 teacher (128-ch FPN) -> R18w16 student (64-ch FPN), Faster
# R-CNN, 12 epochs. FGDLoss aligns the student with a 1x1 conv per level (64 -> 128). Weights of
# the official Faster R-CNN R101 -> R50 config, tuned for COCO; its terms are sums over the
# map (docs/methods/peer_methods.md, "Scale").
_base_ = '../_base_/synthetic_distill.py'
model = dict(
    distill_losses=dict(
        loss_fgd=dict(type='FGDLoss', temperature=0.5, alpha_fg=5e-5, beta_bg=2.5e-5,
                      gamma_attn=5e-5, lambda_global=5e-7, levels=[0, 1, 2, 3])))
