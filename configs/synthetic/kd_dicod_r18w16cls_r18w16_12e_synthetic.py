# DICOD with a two-stage student on the built-in data: the Faster R-CNN R18w16 student of the
# other synthetic KD configs, distilled from the R18w16 crop classifier (trained by
# tools/train_cls_teacher.py) on its positive RoIs, 12 epochs, 32x32 crops.
_base_ = ['../_base_/synthetic_distill.py', '../_base_/methods/dicod.py']
model = dict(
    teacher='configs/synthetic/cls_teacher_r18w16_synthetic.py',
    teacher_ckpt='checkpoints/synthetic/cls_teacher_r18w16_synthetic.pth',
    distill_losses=dict(
        loss_dicod=dict(_base_.dicod_released, crop_size=32)))
