# DICOD's released settings (NVlabs/DICOD, SSD300), defined once for every DICOD config:
# lambda_cls 0.4 with T 2 and eps 1e-10, lambda_loc 0.15, 112 px crops compared as 4x4 pooled
# pixels and 8x8 pooled teacher stem features; crops use the release's zero padding after its
# one-sided clamp (x1, y1 >= 0, x2 <= W, y2 <= H of the padded batch). mmkd's own conventions
# are padding_mode='border', box_clamp='two_sided'.
dicod_released = dict(
    type='DICODLoss', cls_weight=0.4, loc_weight=0.15, temperature=2.0, eps=1e-10,
    crop_size=112, pixel_pool=4, stem_pool=8, chunk_size=256, padding_mode='zeros',
    box_clamp='one_sided')
