"""Timing helpers shared by the benchmark tools (never used in tests as assertions)."""
from __future__ import annotations

import copy
import time
from typing import List, Optional

import torch
from mmengine.runner import Runner


def timed_train_step(model, optim, batch, scaler: Optional['torch.cuda.amp.GradScaler'] = None
                     ) -> float:
    """Seconds for one full training step (preprocess, forward, backward, SGD update).

    With a ``scaler`` (CUDA only) the forward runs under fp16 autocast and the backward and
    update go through the scaler, as mmengine's AmpOptimWrapper does."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    data = model.data_preprocessor(copy.deepcopy(batch), True)
    if scaler is None:
        loss, _ = model.parse_losses(model(**data, mode='loss'))
        optim.zero_grad()
        loss.backward()
        optim.step()
    else:
        with torch.autocast('cuda', dtype=torch.float16):
            loss, _ = model.parse_losses(model(**data, mode='loss'))
        optim.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optim)
        scaler.update()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def real_batches(dataloader_cfg, count: int) -> List[dict]:
    """``count`` batches from a config's dataloader (cycled if it is shorter)."""
    loader = Runner.build_dataloader(dataloader_cfg, seed=0)
    batches = []
    while len(batches) < count:
        for b in loader:
            batches.append(b)
            if len(batches) >= count:
                break
    return batches


def device_name() -> str:
    """The GPU name, or the CPU and its thread count."""
    import platform
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f'CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)'
