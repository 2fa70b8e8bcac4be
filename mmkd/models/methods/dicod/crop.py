"""Differentiable crop-and-resize of boxes (a spatial-transformer crop, as DICOD uses).

Each box is mapped to an affine sampling grid (``F.affine_grid`` + ``F.grid_sample``, bilinear,
``align_corners=False``), so the crop is differentiable with respect to the image *and* the box
coordinates: a loss on the crop of a predicted box moves the box.

Conventions: boxes are ``x1, y1, x2, y2`` in pixel-edge coordinates of the (padded) image
tensor, i.e. pixel ``j`` covers ``[j, j + 1)``. An output pixel ``(u, v)`` of an ``S x S`` crop
samples the image at ``x = x1 + (u + 0.5) * (x2 - x1) / S`` (and likewise for y), so the crop of
an integer box whose size is ``S`` reproduces the image region exactly.

Boxes that leave the image are clamped first (``clamp``), then sampled with ``grid_sample``'s
``padding_mode`` outside the tensor:

* ``clamp='one_sided'`` with ``padding_mode='zeros'`` is the DICOD release: ``x1, y1 >= 0`` and
  ``x2 <= W, y2 <= H`` of the padded tensor, each coordinate on its own side only, so a box
  that lies entirely outside inverts (``x2 < x1``) and samples a mirrored strip at the edge;
* ``clamp='two_sided'`` with ``padding_mode='border'`` is mmkd's own: every coordinate into the
  valid ``img_shape`` (padding is never sampled), and a crop that commutes with any per-channel
  affine normalisation.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor


def clamp_boxes(boxes: Tensor, batch_idx: Tensor,
                img_shapes: Optional[Sequence[Sequence[int]]]) -> Tensor:
    """Clamp (N, 4) pixel boxes to the valid ``(h, w)`` area of their image (no-op if None)."""
    if img_shapes is None:
        return boxes
    hw = boxes.new_tensor([[float(s[0]), float(s[1])] for s in img_shapes])[batch_idx.long()]
    x = torch.minimum(boxes[:, 0::2].clamp(min=0), hw[:, 1:2])
    y = torch.minimum(boxes[:, 1::2].clamp(min=0), hw[:, 0:1])
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)


#: ``crop_and_resize`` clamp modes.
CLAMP_MODES = ('one_sided', 'two_sided', 'none')
#: ``grid_sample`` padding modes ``crop_and_resize`` accepts.
PADDING_MODES = ('zeros', 'border', 'reflection')


def clamp_boxes_one_sided(boxes: Tensor, height: int, width: int) -> Tensor:
    """The DICOD release's clamp: ``x1, y1 >= 0`` and ``x2 <= width``, ``y2 <= height`` (the
    padded image), each coordinate on one side only. A box entirely outside inverts.

    Args:
        boxes: (N, 4) pixel boxes; the gradient passes where a coordinate is not clamped.
        height / width: H and W of the image tensor.

    Returns:
        (N, 4) clamped boxes.
    """
    x1, y1 = boxes[:, 0].clamp(min=0), boxes[:, 1].clamp(min=0)
    x2, y2 = boxes[:, 2].clamp(max=float(width)), boxes[:, 3].clamp(max=float(height))
    return torch.stack([x1, y1, x2, y2], dim=1)


def box_affine(boxes: Tensor, height: int, width: int) -> Tensor:
    """(N, 4) pixel boxes -> (N, 2, 3) ``affine_grid`` matrices of an H x W image.

    The matrix scales by ``(w / W, h / H)`` and translates to ``(2 c_x / W - 1, 2 c_y / H - 1)``
    (normalised coordinates with ``align_corners=False``).
    """
    x1, y1, x2, y2 = boxes.unbind(1)
    zero = torch.zeros_like(x1)
    row0 = torch.stack([(x2 - x1) / width, zero, (x1 + x2) / width - 1.0], dim=1)
    row1 = torch.stack([zero, (y2 - y1) / height, (y1 + y2) / height - 1.0], dim=1)
    return torch.stack([row0, row1], dim=1)


def crop_and_resize(images: Tensor, boxes: Tensor, size: Union[int, Sequence[int]],
                    batch_idx: Optional[Tensor] = None,
                    img_shapes: Optional[Sequence[Sequence[int]]] = None,
                    padding_mode: str = 'border', clamp: str = 'two_sided') -> Tensor:
    """Crop ``boxes`` out of ``images`` and resize each crop to ``size`` (bilinear).

    Args:
        images: (B, C, H, W) image batch (any normalisation; cropping is linear per channel).
        boxes: (N, 4) ``x1, y1, x2, y2`` in pixels of ``images``; gradients flow into them.
        size: S or (S_h, S_w), the output size.
        batch_idx: (N,) image index of each box; None means all boxes are on image 0 (B must
            be 1 then).
        img_shapes: B ``(h, w)`` valid (unpadded) sizes, used by ``clamp='two_sided'``.
        padding_mode: ``grid_sample`` padding, one of :data:`PADDING_MODES`. ``'border'``
            (default) makes the crop commute with any per-channel affine normalisation, even at
            the image edge; ``'zeros'`` is the DICOD release's.
        clamp: one of :data:`CLAMP_MODES`. ``'two_sided'`` (default): every coordinate into its
            image's ``img_shapes`` entry (no-op when ``img_shapes`` is None), so padding is never
            sampled. ``'one_sided'``: the DICOD release's :func:`clamp_boxes_one_sided` to the
            padded tensor. ``'none'``: boxes as given.

    Returns:
        (N, C, S_h, S_w) crops, in the dtype of ``images``.
    """
    if clamp not in CLAMP_MODES:
        raise ValueError(f'crop_and_resize: clamp must be one of {CLAMP_MODES}, got {clamp!r}')
    if padding_mode not in PADDING_MODES:
        raise ValueError(f'crop_and_resize: padding_mode must be one of {PADDING_MODES}, got '
                         f'{padding_mode!r}')
    if images.dim() != 4:
        raise ValueError(f'images must be (B, C, H, W), got shape {tuple(images.shape)}')
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f'boxes must be (N, 4) x1, y1, x2, y2 pixels, got {tuple(boxes.shape)}')
    sh, sw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    n = boxes.shape[0]
    if batch_idx is None:
        if images.shape[0] != 1:
            raise ValueError('pass batch_idx (the image of each box) when images holds '
                             f'{images.shape[0]} images')
        batch_idx = boxes.new_zeros(n, dtype=torch.long)
    if n == 0:
        return images.new_zeros(0, images.shape[1], sh, sw)
    h, w = images.shape[-2:]
    boxes = boxes.to(images.dtype)
    if clamp == 'two_sided':
        boxes = clamp_boxes(boxes, batch_idx, img_shapes)
    elif clamp == 'one_sided':
        boxes = clamp_boxes_one_sided(boxes, h, w)
    theta = box_affine(boxes, h, w)
    grid = F.affine_grid(theta, [n, images.shape[1], sh, sw], align_corners=False)
    # One grid_sample per image, the boxes' grids stacked along the rows: the image is never
    # copied once per box (that would cost N x C x H x W memory).
    out = images.new_empty(n, images.shape[1], sh, sw)
    bidx = batch_idx.long()
    for b in torch.unique(bidx).tolist():
        sel = (bidx == b).nonzero(as_tuple=True)[0]
        g = grid[sel].reshape(1, sel.numel() * sh, sw, 2)
        crops = F.grid_sample(images[b:b + 1], g, mode='bilinear', padding_mode=padding_mode,
                              align_corners=False)  # (1, C, n_b * S_h, S_w)
        out = out.index_copy(0, sel, crops.view(images.shape[1], sel.numel(), sh, sw)
                             .transpose(0, 1))
    return out
