"""Multi-level FPN maps as one token sequence, with padding masks and sine positions."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple

import torch
from mmdet.models.layers import SinePositionalEncoding
from torch import Tensor


@dataclass
class TokenSequence:
    """All FPN levels of a batch flattened into S = sum_l H_l * W_l tokens (level-major, then
    row-major within a level).

    Attributes:
        tokens: (B, S, C) features.
        pad_mask: (B, S) True where the token lies in the batch padding (beyond the image).
        pos: (B, S, 2 * num_feats) DETR-style sine embedding of the token position, normalised
            over the valid region of its level (0 on padded tokens).
        level_sizes: (H_l, W_l) per level.
    """

    tokens: Tensor
    pad_mask: Tensor
    pos: Tensor
    level_sizes: Tuple[Tuple[int, int], ...]


def level_padding_mask(feat_hw: Tuple[int, int], batch_hw: Tuple[int, int],
                       img_shapes: Sequence[Sequence[int]], device: torch.device) -> Tensor:
    """(B, H_l, W_l) True on padded positions of one level.

    The level's stride is estimated as ``mean(H_pad / H_l, W_pad / W_l)`` and an image of valid
    size (h, w) covers ``ceil(h / stride)`` x ``ceil(w / stride)`` positions.
    """
    h_l, w_l = feat_hw
    stride = (batch_hw[0] / h_l + batch_hw[1] / w_l) / 2.0
    rows = torch.arange(h_l, device=device)
    cols = torch.arange(w_l, device=device)
    masks = []
    for h, w in img_shapes:
        vh, vw = math.ceil(h / stride), math.ceil(w / stride)
        masks.append((rows[:, None] >= vh) | (cols[None, :] >= vw))
    return torch.stack(masks)


def flatten_levels(feats: Sequence[Tensor], img_shapes: Sequence[Sequence[int]],
                   batch_hw: Tuple[int, int], pos_encoder: SinePositionalEncoding
                   ) -> TokenSequence:
    """Flatten L maps (B, C, H_l, W_l) into a :class:`TokenSequence`.

    Args:
        feats: the FPN levels.
        img_shapes: B valid (h, w) sizes in batch-input pixels.
        batch_hw: (H_pad, W_pad) of the padded batch.
        pos_encoder: mmdet's normalised sine encoding (``num_feats`` per axis).
    """
    tokens, masks, pos, sizes = [], [], [], []
    for f in feats:
        b, c, h, w = f.shape
        mask = level_padding_mask((h, w), batch_hw, img_shapes, f.device)
        p = pos_encoder(mask).to(f.dtype)  # (B, 2 * num_feats, H, W)
        p = p.masked_fill(mask[:, None], 0.0)
        tokens.append(f.flatten(2).transpose(1, 2))
        masks.append(mask.flatten(1))
        pos.append(p.flatten(2).transpose(1, 2))
        sizes.append((h, w))
    return TokenSequence(torch.cat(tokens, 1), torch.cat(masks, 1), torch.cat(pos, 1),
                         tuple(sizes))
