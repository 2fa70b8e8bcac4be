# DSIG's released one-stage node settings (dvlab-research/Dsig retinanet_kd.py), defined once
# for every RetinaNet DSIG config: the student's post-NMS detections (1000 per level before NMS,
# no score threshold, class-wise NMS 0.5, 100 per image) left unclipped with no minimum size,
# pooled 7x7 by detectron2's canonical rule (224 px at P4 = finest_scale 112 on P3-P7).
# Two-stage students pool their own sampled RoIs with their RoI extractor (finest_scale 56 on
# P2-P5, the same rule), so these keys do not apply to them.
# The graph loss of the R50 <- R101 configs (edge 1.0, fg 0.5, bg 0.5; the adaptive background
# factor 7.5, hard backgrounds at teacher CE >= 0.6, per-image losses x 2 = the release's sum over
# 2 images per GPU), used by the Faster R-CNN R101 -> R50 and synthetic configs and the
# benchmark's 'dsig' preset (one-stage students add dsig_one_stage_nodes).
dsig_loss = dict(type='StructuredInstanceGraphLoss', edge_weight=1.0, fg_weight=0.5,
                 bg_weight=0.5, bg_alpha=7.5, mining_threshold=0.6, image_scale=2.0)
dsig_one_stage_nodes = dict(
    detections=dict(nms_pre=1000, score_thr=0.0, iou_threshold=0.5, max_per_img=100,
                    clip=False, min_bbox_size=-1),
    finest_scale=112)
