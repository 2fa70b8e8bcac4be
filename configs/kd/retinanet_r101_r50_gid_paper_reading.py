# GID, mmkd's paper-reading variant (not the released recipe; that is
# retinanet_r101_r50_gid.py): the GI score is the maximum over classes of the score difference
# (score_mode 'max_diff'), a trained shared 3x3 adapter is applied to the student's pooled GI
# features (the release builds one but never applies it), the relation is computed per image,
# and the feature weight is the re-implementation's code default 5e-3. Everything else as the
# release. Measured effect: none yet at COCO scale (docs/methods/gid.md).
_base_ = './retinanet_r101_r50_gid.py'
model = dict(
    distill_losses=dict(
        loss_gid=dict(score_mode='max_diff', adapter='conv3x3', relation_scope='image',
                      feat_weight=5e-3)))
