# Shared by every distillation config on the built-in data: the R18w16 student (its data,
# schedule and runtime), the R34w32 teacher trained 36 epochs (its checkpoint ships in
# checkpoints/synthetic/), and mmkd's hooks.
# A method config inherits this and sets model.distill_losses (and custom_hooks if it needs more).
_base_ = [
    '../synthetic/faster_rcnn_r18w16_fpn_12e_synthetic.py',
    './distill_runtime.py',
]
model = dict(
    _delete_=True,
    type='DistillDetector',
    student='configs/synthetic/faster_rcnn_r18w16_fpn_12e_synthetic.py',
    teacher='configs/synthetic/faster_rcnn_r34w32_fpn_36e_synthetic.py',
    teacher_ckpt='checkpoints/synthetic/faster_rcnn_r34w32_fpn_36e_synthetic.pth',
    distill_losses=dict())
# What the built-in data needs on top of the released settings (its objects are 8-96 px in
# 160 px images, about 200 per class, 100 iterations per epoch): PGM prototypes from boxes over
# 12 px and up to 200 images per class (30 px and 800 on COCO), a 64-entry online bank and 8
# images per offline-pass batch; GID instances wider and taller than 4 px (10 on COCO); ICD's
# bypass as long as the detector's 100-iteration LR warm-up (1000 on COCO). The synthetic configs
# use these, and tools/benchmark.py applies them to every pair on the built-in data.
synthetic_tuning = dict(
    pgm=dict(min_size=12, max_samples=200, bank_size=64),
    pgm_hook=dict(batch_size=8),
    gid=dict(min_size=4),
    icd=dict(bypass_iters=100))
