"""Re-seed the RNGs at the start of every epoch so a resumed run repeats the uninterrupted one."""
from __future__ import annotations

import random

import numpy as np
import torch
from mmdet.registry import HOOKS
from mmengine.dist import get_rank
from mmengine.hooks import Hook


def epoch_seed(base_seed: int, epoch: int, rank: int = 0) -> int:
    """A 32-bit seed that depends only on (base seed, epoch, rank)."""
    return (int(base_seed) * 1_000_003 + epoch * 7_919 + rank * 104_729) % (2 ** 32)


@HOOKS.register_module()
class EpochSeedHook(Hook):
    """Seed ``random``, numpy and torch (CPU and CUDA) from (run seed, epoch) before each epoch.

    mmengine restores weights, optimizer, schedulers and the seed on ``--resume``, but not the
    RNG streams: the RPN/RoI samplers, random augmentations (with ``num_workers=0``) and anything
    else drawing from the global generators continue differently after a restart. Keying the
    streams to the epoch makes every epoch's randomness independent of what ran before it (a
    validation pass, a restart), so a run killed and resumed from an epoch checkpoint reaches the
    same weights as an uninterrupted run. Dataloader workers are seeded by mmengine from the
    seed, rank and worker id; keep ``persistent_workers=False`` for the same guarantee.
    """

    priority = 'VERY_HIGH'

    def before_train_epoch(self, runner) -> None:
        diff_rank = bool(getattr(runner, '_randomness_cfg', {}).get('diff_rank_seed', False))
        seed = epoch_seed(runner.seed, runner.epoch, get_rank() if diff_rank else 0)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # also seeds every CUDA device
