# Global-Knowledge distillation (PGM + RDM) on the built-in data: R34w32 teacher -> R18w16
# student, 12 epochs. Objects here are 8-96 px, so prototypes use boxes over 12 px.
# pgm.mode='offline' runs an extra pass before each epoch (PGMHook); 'online' fills a memory
# bank from the training steps instead:  --cfg-options model.distill_losses.loss_gk.pgm.mode=online
_base_ = '../_base_/synthetic_distill.py'
model = dict(
    distill_losses=dict(
        loss_gk=dict(
            type='RobustDistillingModule',
            boxes='pos_rois',
            fg_weight=1.0,
            bg_weight=4.0,
            soft_weight=1.0,
            temperature=2.0,
            relation_weight=0.0,
            pgm=dict(mode='offline', num_prototypes=10, alpha=10.0, min_size=12,
                     max_samples=200, bank_size=64))))
custom_hooks = [
    dict(type='StudentCheckpointHook'),
    dict(type='EpochSeedHook'),
    dict(type='PGMHook', interval=1, batch_size=8),
]
