"""Shared loader and comparisons for the golden tests (reference outputs of the released code).

The fixtures live in ``../shared/golden`` beside the checkout (CI has them there), or in the folder
``MMKD_GOLDEN_DIR`` names. Where neither exists (a user's clone) the golden tests skip with a
reason that says so; with ``MMKD_REQUIRE_GOLDEN=1`` (set by ``.ci/run``) they fail instead, so a
CI run can never pass by skipping them.

Tolerances are the ones ``CASES.md`` states for the side-by-side runs:

* scalars: relative difference <= 1e-5 (:func:`assert_scalar`);
* tensors: ``max|got - ref| <= 1e-4 * max|ref|`` (:func:`assert_tensor`);
* index sets and masks: equal (:func:`assert_same`).
"""
from __future__ import annotations

import math
import os
import os.path as osp
from typing import Any, Dict, Optional, Sequence, Union

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
ENV_DIR = 'MMKD_GOLDEN_DIR'
ENV_REQUIRE = 'MMKD_REQUIRE_GOLDEN'
SCALAR_RTOL = 1e-5
TENSOR_RTOL = 1e-4


def golden_dir() -> Optional[str]:
    """The fixture folder: ``$MMKD_GOLDEN_DIR``, else ``<checkout>/../shared/golden``; None if
    neither exists."""
    env = os.environ.get(ENV_DIR)
    if env:
        if not osp.isdir(env):
            raise FileNotFoundError(f'{ENV_DIR}={env} is not a folder: point it at the golden '
                                    'fixtures (the folder holding CASES.md), or unset it.')
        return env
    default = osp.normpath(osp.join(REPO, '..', 'shared', 'golden'))
    return default if osp.isdir(default) else None


def load_case(rel_path: str) -> Dict[str, Any]:
    """Load one fixture (``'gk/negative_r.pt'``) with ``weights_only=True``.

    Skips the calling test when no fixture folder exists (fails under ``MMKD_REQUIRE_GOLDEN=1``);
    a folder that exists but lacks the file is an error, not a skip.
    """
    root = golden_dir()
    if root is None:
        reason = ('golden fixtures not found: neither ../shared/golden beside the checkout nor '
                  f'${ENV_DIR} exists (a user clone without the reference fixtures)')
        if os.environ.get(ENV_REQUIRE) == '1':
            pytest.fail(reason + f', and {ENV_REQUIRE}=1 requires them')
        pytest.skip(reason)
    path = osp.join(root, rel_path)
    if not osp.isfile(path):
        raise FileNotFoundError(f'golden fixture {path} is missing from {root}')
    return torch.load(path, map_location='cpu', weights_only=True)


def _num(x: Union[float, torch.Tensor]) -> float:
    return float(x.detach().double().item()) if isinstance(x, torch.Tensor) else float(x)


def assert_scalar(name: str, got: Union[float, torch.Tensor], ref: Union[float, torch.Tensor],
                  rtol: float = SCALAR_RTOL, atol: float = 0.0) -> None:
    """``|got - ref| <= rtol * |ref| + atol`` (``atol`` only for a reference that is exactly 0)."""
    g, r = _num(got), _num(ref)
    assert math.isfinite(g), f'{name}: got {g}, expected {r}'
    err = abs(g - r)
    assert err <= rtol * abs(r) + atol, (
        f'{name}: got {g!r}, released {r!r} (rel diff {err / max(abs(r), 1e-30):.3g} > {rtol})')


def assert_tensor(name: str, got: torch.Tensor, ref: torch.Tensor,
                  rtol: float = TENSOR_RTOL) -> None:
    """Same shape and ``max|got - ref| <= rtol * max|ref|`` (exact when ``ref`` is all zero)."""
    got = got.detach().cpu()
    ref = ref.detach().cpu()
    assert tuple(got.shape) == tuple(ref.shape), (
        f'{name}: shape {tuple(got.shape)}, released {tuple(ref.shape)}')
    g, r = got.double(), ref.double()
    assert torch.isfinite(g).all(), f'{name}: non-finite values'
    scale = r.abs().max().item() if r.numel() else 0.0
    err = (g - r).abs().max().item() if r.numel() else 0.0
    assert err <= rtol * scale, (
        f'{name}: max|diff| {err:.3g} > {rtol} * max|ref| ({scale:.3g}); '
        f'rel {err / max(scale, 1e-30):.3g}')


def assert_tensors(name: str, got: Sequence[torch.Tensor], ref: Sequence[torch.Tensor],
                   rtol: float = TENSOR_RTOL) -> None:
    """:func:`assert_tensor` on each element of two equally long lists (levels, images)."""
    assert len(got) == len(ref), f'{name}: {len(got)} items, released {len(ref)}'
    for i, (g, r) in enumerate(zip(got, ref)):
        assert_tensor(f'{name}[{i}]', g, r, rtol)


def assert_same(name: str, got: torch.Tensor, ref: torch.Tensor) -> None:
    """Exactly equal index sets, labels or masks (dtype-insensitive)."""
    got = torch.as_tensor(got).detach().cpu()
    ref = torch.as_tensor(ref).detach().cpu()
    assert tuple(got.shape) == tuple(ref.shape), (
        f'{name}: shape {tuple(got.shape)}, released {tuple(ref.shape)}')
    diff = (got.to(ref.dtype) != ref)
    assert not diff.any(), (f'{name}: {int(diff.sum())} of {diff.numel()} entries differ '
                            f'(first at {diff.nonzero()[0].tolist()})')
