# ICD's second optimiser, shared by every ICD config. A config inherits this next to its
# detector config and adds
#   optim_wrapper = dict(
#       _delete_=True, constructor='DistillOptimWrapperConstructor',
#       student=dict(_base_.optim_wrapper, clip_grad=_base_.icd_student_clip_grad),
#       distill=_base_.icd_distill_optim)
#   param_scheduler = dict(_delete_=True, student=_base_.param_scheduler,
#                          distill=_base_.icd_distill_schedule_12e)
# The detector keeps its own optimiser (the inherited optim_wrapper becomes the 'student'
# wrapper), with the release's gradient clipping. The encoder, decoder and student value
# projection of the ICD loss (all under model.distill_losses) train with AdamW lr 1e-4, wd 1e-4,
# grad max-norm 0.01 and a cosine schedule over the run, as in the paper's code.
icd_distill_optim = dict(
    type='OptimWrapper',
    params=['distill_losses'],
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=0.01))
# The student's wrapper clips every gradient element at 1.0, as the release does (detectron2's
# CLIP_GRADIENTS value clipping); it replaces the clip of the inherited mmdet recipe (FCOS and
# SOLOv2: max-norm 35).
icd_student_clip_grad = dict(type='value', clip_value=1.0)
# The loss's conventions, shared by every ICD config, all as the release has them: fake boxes
# drawn with the size Gaussian truncated at +-2 sigma and clamped to the image, and the scale bins
# of every image computed from the LAST image's size (scale_bins='last_image', a bug of the
# release that changes the bins when a batch mixes image sizes). The loss's own default is mmkd's
# fix, scale_bins='per_image'; a config of your own can switch to it. A config adds its weights:
#   loss_icd=dict(**_base_.icd_loss, mimic_weight=..., max_instances=..., ...)
icd_loss = dict(type='InstanceConditionalDistillLoss', fake_size_clip_sigma=2.0,
                fake_box_clamp=True, scale_bins='last_image')
# The released weights by detector kind: R-CNN students (Faster / Mask R-CNN) mimic with weight
# 3 over at most 100 instances, one-stage and query-free students (RetinaNet, FCOS, CondInst,
# SOLOv2) with weight 8 over 300; distillation starts after 1000 iterations (bypass).
icd_two_stage = dict(mimic_weight=3.0, max_instances=100, bypass_iters=1000)
icd_one_stage = dict(mimic_weight=8.0, max_instances=300, bypass_iters=1000)
# The release's training input (detectron2's and AdelaiDet's default, used by every released ICD
# config): multi-scale, each image resized so that its short side is one of 640, 672, ..., 800
# (drawn uniformly) and its long side at most 1333, keeping the aspect ratio. A COCO config puts
# it in place of its mmdet recipe's single-scale Resize:
#   train_dataloader = dict(dataset=dict(pipeline=[
#       _base_.icd_train_resize if step['type'] == 'Resize' else step
#       for step in _base_.train_pipeline]))
# (CondInst's mmdet recipe already trains on these scales.)
icd_train_resize = dict(
    type='RandomChoiceResize',
    scales=[(1333, 640), (1333, 672), (1333, 704), (1333, 736), (1333, 768), (1333, 800)],
    keep_ratio=True)
icd_distill_schedule_12e = [
    dict(type='CosineAnnealingLR', T_max=12, by_epoch=True, begin=0, end=12,
         convert_to_iter_based=True),
]
# dist_train.sh: a DDP wrapper whose train step drives both optimisers.
model_wrapper_cfg = dict(type='DistillDataParallel')
