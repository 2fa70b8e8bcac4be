"""The golden comparisons themselves: they must reject values just outside the tolerances."""
import pytest
import torch

from golden_utils import assert_same, assert_scalar, assert_tensor


def test_scalar_tolerance_is_relative_1e5():
    assert_scalar('x', 1.0 + 0.9e-5, 1.0)
    with pytest.raises(AssertionError, match='rel diff'):
        assert_scalar('x', 1.0 + 1.1e-5, 1.0)
    with pytest.raises(AssertionError):
        assert_scalar('x', float('nan'), 1.0)


def test_tensor_tolerance_is_relative_to_max_abs():
    ref = torch.tensor([10.0, -0.5, 0.0])
    assert_tensor('t', ref + torch.tensor([0.0, 9e-4, 0.0]), ref)
    with pytest.raises(AssertionError, match='max'):
        assert_tensor('t', ref + torch.tensor([0.0, 1.1e-3, 0.0]), ref)
    with pytest.raises(AssertionError, match='shape'):
        assert_tensor('t', ref[:2], ref)


def test_masks_must_be_equal():
    m = torch.tensor([[True, False], [False, True]])
    assert_same('m', m.long(), m)
    bad = m.clone()
    bad[0, 1] = True
    with pytest.raises(AssertionError, match='1 of 4'):
        assert_same('m', bad, m)
