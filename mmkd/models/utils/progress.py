"""Where training is: read from mmengine's message hub, which the runner keeps current."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from mmengine.logging import MessageHub


def hub_info(hub: MessageHub, key: str, default: Any = None) -> Any:
    """``hub.get_info(key, default)`` on every supported mmengine: before 0.8 ``get_info`` takes
    no default and raises ``KeyError`` for a missing key."""
    try:
        value = hub.get_info(key)
    except KeyError:
        return default
    return default if value is None else value


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
        return cls(epoch=int(hub_info(hub, 'epoch', 0)), iter=int(hub_info(hub, 'iter', 0)),
                   max_epochs=hub_info(hub, 'max_epochs'), max_iters=hub_info(hub, 'max_iters'))
