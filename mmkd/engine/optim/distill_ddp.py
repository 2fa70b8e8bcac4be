"""DDP wrapper that also trains with several optimisers (an ``OptimWrapperDict``)."""
from __future__ import annotations

from typing import Dict, Union

import torch
from mmengine.model import MMDistributedDataParallel
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.registry import MODEL_WRAPPERS

from .multi_optim import train_step_multi_optim


# mmengine's runner looks wrappers up in its root registry (without the default scope)
@MODEL_WRAPPERS.register_module()
class DistillDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` whose ``train_step`` accepts an ``OptimWrapperDict``.

    mmengine's DDP wrapper runs its own train step and expects a single optimiser wrapper; with
    this one, configs using :class:`DistillOptimWrapperConstructor` train under
    ``dist_train.sh`` too (set ``model_wrapper_cfg = dict(type='DistillDataParallel')``). With a
    single wrapper it behaves exactly like its parent.
    """

    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: Union[OptimWrapper, OptimWrapperDict]
                   ) -> Dict[str, torch.Tensor]:
        if isinstance(optim_wrapper, OptimWrapperDict):
            return train_step_multi_optim(self, data, optim_wrapper)
        return super().train_step(data, optim_wrapper)
