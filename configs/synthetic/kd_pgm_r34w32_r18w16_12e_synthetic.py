# Global-Knowledge distillation (PGM + RDM) on the built-in data: R34w32 teacher -> R18w16
# student, 12 epochs, with the released conventions (configs/_base_/gk_released.py). Objects
# here are 8-96 px, so prototypes use boxes over 12 px, and up to 200 images per class.
# pgm.mode='offline' runs an extra pass before each epoch (PGMHook); 'online' fills a memory
# bank from the training steps instead:  --cfg-options model.distill_losses.loss_gk.pgm.mode=online
_base_ = ['../_base_/synthetic_distill.py', '../_base_/gk_released.py']
model = dict(
    distill_losses=dict(
        loss_gk=dict(
            **_base_.gk_loss,
            boxes='pos_rois',
            strides=[4, 8, 16, 32, 64],  # the student's RPN anchor strides
            pgm=dict(_base_.gk_pgm, **_base_.synthetic_tuning.pgm))))
custom_hooks = _base_.custom_hooks + [
    dict(_base_.gk_hooks[0], **_base_.synthetic_tuning.pgm_hook)]
