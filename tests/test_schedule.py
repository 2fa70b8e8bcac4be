"""Loss-weight schedule values."""
import pytest

from mmkd.models.losses import WeightSchedule
from mmkd.models.utils import TrainProgress


def P(epoch=0, it=0, me=24, mi=2400):
    return TrainProgress(epoch=epoch, iter=it, max_epochs=me, max_iters=mi)


def test_constant():
    assert WeightSchedule()(P(5, 500)) == 1.0


def test_linear_decay_by_epoch_is_pgm_attenuation():
    s = WeightSchedule(decay='linear', by='epoch')
    assert s(P(0)) == 1.0
    assert s(P(6)) == pytest.approx(1 - 6 / 24)
    assert s(P(23)) == pytest.approx(1 / 24)


def test_linear_decay_by_iter_with_floor():
    s = WeightSchedule(decay='linear', by='iter', min_factor=0.1)
    assert s(P(it=1200)) == pytest.approx(0.5)
    assert s(P(it=2390)) == pytest.approx(0.1)


def test_warmup():
    s = WeightSchedule(warmup_iters=100, warmup_ratio=0.2)
    assert s(P(it=0)) == pytest.approx(0.2)
    assert s(P(it=50)) == pytest.approx(0.6)
    assert s(P(it=100)) == 1.0


def test_warmup_times_decay_and_stop():
    s = WeightSchedule(warmup_iters=10, decay='linear', by='epoch', stop_epoch=20)
    assert s(P(epoch=0, it=5)) == pytest.approx(0.5)
    assert s(P(epoch=12, it=1200)) == pytest.approx(0.5)
    assert s(P(epoch=20, it=2000)) == 0.0
    assert WeightSchedule(stop_iter=300)(P(it=299)) == 1.0
    assert WeightSchedule(stop_iter=300)(P(it=300)) == 0.0


def test_bad_arguments_and_missing_max():
    with pytest.raises(ValueError):
        WeightSchedule(decay='cosine')
    with pytest.raises(ValueError):
        WeightSchedule(by='step')
    with pytest.raises(RuntimeError, match='max_epochs'):
        WeightSchedule(decay='linear')(TrainProgress(epoch=1))
