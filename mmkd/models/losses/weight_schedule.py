"""Loss-weight schedules: warm-up, linear decay over training, and a stop point."""
from __future__ import annotations

from typing import Optional

from ..utils.progress import TrainProgress


class WeightSchedule:
    """Multiplier for a distillation loss as a function of training progress.

    factor = warmup(iter) * decay(progress), and 0 from ``stop_epoch`` / ``stop_iter`` on.

    Args:
        warmup_iters: ramp the factor linearly from ``warmup_ratio`` to 1 over this many
            iterations (0 disables the warm-up).
        warmup_ratio: factor at iteration 0 of the warm-up.
        decay: ``None`` or ``'linear'``. Linear decay is ``1 - epoch / max_epochs`` with
            ``by='epoch'`` (the Global-Knowledge paper's attenuation, epoch counted from 0) or
            ``1 - iter / max_iters`` with ``by='iter'``, floored at ``min_factor``.
        by: ``'epoch'`` or ``'iter'``: the clock of the decay.
        min_factor: lower bound of the decayed factor.
        stop_epoch / stop_iter: from this epoch / iteration (0-based) on, the loss is off.
    """

    def __init__(self, warmup_iters: int = 0, warmup_ratio: float = 0.0,
                 decay: Optional[str] = None, by: str = 'epoch', min_factor: float = 0.0,
                 stop_epoch: Optional[int] = None, stop_iter: Optional[int] = None) -> None:
        if decay not in (None, 'linear'):
            raise ValueError(f"decay must be None or 'linear', got {decay!r}")
        if by not in ('epoch', 'iter'):
            raise ValueError(f"by must be 'epoch' or 'iter', got {by!r}")
        if warmup_iters < 0 or not 0.0 <= warmup_ratio <= 1.0:
            raise ValueError('warmup_iters must be >= 0 and warmup_ratio in [0, 1]')
        self.warmup_iters, self.warmup_ratio = int(warmup_iters), float(warmup_ratio)
        self.decay, self.by, self.min_factor = decay, by, float(min_factor)
        self.stop_epoch, self.stop_iter = stop_epoch, stop_iter

    def stopped(self, p: TrainProgress) -> bool:
        """True once the stop epoch or iteration has been reached."""
        return ((self.stop_epoch is not None and p.epoch >= self.stop_epoch)
                or (self.stop_iter is not None and p.iter >= self.stop_iter))

    def __call__(self, p: TrainProgress) -> float:
        if self.stopped(p):
            return 0.0
        factor = 1.0
        if self.warmup_iters > 0 and p.iter < self.warmup_iters:
            frac = p.iter / self.warmup_iters
            factor *= self.warmup_ratio + (1.0 - self.warmup_ratio) * frac
        if self.decay == 'linear':
            total = p.max_epochs if self.by == 'epoch' else p.max_iters
            if not total:
                raise RuntimeError(
                    f"decay='linear' by {self.by} needs max_{self.by}s, which the runner's "
                    'message hub did not provide (is the loss used outside a training loop?)')
            now = p.epoch if self.by == 'epoch' else p.iter
            factor *= max(self.min_factor, 1.0 - now / total)
        return factor

    def __repr__(self) -> str:
        return (f'WeightSchedule(warmup_iters={self.warmup_iters}, decay={self.decay}, '
                f'by={self.by}, stop_epoch={self.stop_epoch}, stop_iter={self.stop_iter})')
