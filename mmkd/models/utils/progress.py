"""Where training is: read from mmengine's message hub, which the runner keeps current."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from mmengine.logging import MessageHub


@dataclass(frozen=True)
class TrainProgress:
    """Training position used by loss-weight schedules.

    Attributes:
        epoch: completed epochs (0 during the first epoch).
        iter: completed iterations (0 during the first iteration).
        max_epochs / max_iters: training length, None when unknown (e.g. outside a runner).
    """

    epoch: int = 0
    iter: int = 0
    max_epochs: Optional[int] = None
    max_iters: Optional[int] = None

    @classmethod
    def current(cls) -> 'TrainProgress':
        """Read the runner's position from the current MessageHub (defaults outside a run)."""
        hub = MessageHub.get_current_instance()
        return cls(epoch=int(hub.get_info('epoch', 0) or 0), iter=int(hub.get_info('iter', 0) or 0),
                   max_epochs=hub.get_info('max_epochs'), max_iters=hub.get_info('max_iters'))
