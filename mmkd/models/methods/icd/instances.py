"""ICD's instance descriptors: real GT instances plus sampled fake ones, encoded as queries."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.layers.transformer.utils import coordinate_to_encoding
from torch import Tensor, nn

from .priors import InstancePriors


@dataclass
class InstanceBatch:
    """K instance slots per image (K = the batch's largest count; real instances first).

    Attributes:
        labels: (B, K) class ids (0 on padded slots).
        boxes: (B, K, 4) boxes ``x1, y1, x2, y2`` normalised by the image's valid (w, h).
        points: (B, K, 2) the jittered point ``(x, y)`` inside each box, normalised.
        wh_px: (B, K, 2) box width and height in input pixels.
        real: (B, K) True for GT instances.
        valid: (B, K) True for filled slots (real or fake); False for padding.
    """

    labels: Tensor
    boxes: Tensor
    points: Tensor
    wh_px: Tensor
    real: Tensor
    valid: Tensor

    @property
    def num_real(self) -> Tensor:
        """(B,) the number of real instances per image."""
        return self.real.sum(1)


def num_slots(n_gt: int, neg_pos_ratio: float, max_instances: int) -> int:
    """How many instances an image gets: ``min(max(1, floor(n_gt (1 + r))), max(M, n_gt))``."""
    return min(max(1, int(math.floor(n_gt * (1 + neg_pos_ratio)))), max(max_instances, n_gt))


#: ``scale_bins`` choices: each image's own size (mmkd) or the last image's (the release).
SCALE_BIN_SOURCES = ('per_image', 'last_image')


def instance_sizes_px(boxes: Tensor, img_shapes: Sequence[Sequence[int]], valid: Tensor,
                      scale_bins: str = 'per_image') -> Tensor:
    """Box width and height in pixels, the input of the descriptors' scale bins.

    Args:
        boxes: (B, K, 4) boxes normalised by each image's valid (w, h).
        img_shapes: per image, the valid (h, w) in input pixels.
        valid: (B, K) True on filled slots (padding gets size 0).
        scale_bins: ``'per_image'``: each image's boxes are scaled by that image's (w, h);
            ``'last_image'``: every image uses the (w, h) of the last image in the batch, as
            the released code does (a bug when the images differ in size).

    Returns:
        (B, K, 2) sizes in pixels.
    """
    if scale_bins not in SCALE_BIN_SOURCES:
        raise ValueError(f'scale_bins={scale_bins!r} is not valid; choose one of '
                         f"{', '.join(repr(v) for v in SCALE_BIN_SOURCES)}.")
    shapes = list(img_shapes)
    if scale_bins == 'last_image':
        shapes = [shapes[-1]] * len(shapes)
    wh_img = boxes.new_tensor([[float(w), float(h)] for h, w in shapes])  # (B, 2)
    wh = (boxes[..., 2:] - boxes[..., :2]) * wh_img[:, None, :]
    return torch.where(valid[..., None], wh, torch.zeros_like(wh))


def build_instances(gt_boxes: Sequence[Tensor], gt_labels: Sequence[Tensor],
                    img_shapes: Sequence[Sequence[int]], priors: InstancePriors,
                    neg_pos_ratio: float = 5.0, max_instances: int = 300,
                    sample_range: float = 0.3, scale_bins: str = 'per_image') -> InstanceBatch:
    """Real GT instances plus fake ones drawn from ``priors``, padded into one batch.

    Args:
        gt_boxes: per image, (N_i, 4) GT boxes in input pixels.
        gt_labels: per image, (N_i,) GT labels.
        img_shapes: per image, the valid (h, w) in input pixels.
        priors: the fake-instance priors.
        neg_pos_ratio: fake instances per real one (5 in the paper's code).
        max_instances: cap of the slot count unless there are more GT boxes (300 one-stage,
            100 R-CNN in the original configs).
        sample_range: the point is the (clamped) box centre plus U(-r, r) times its (w, h) per
            axis, so it stays inside the box.
        scale_bins: which image size turns the normalised boxes into the pixel sizes of the
            scale bins (:func:`instance_sizes_px`).
    """
    per_image = []
    for boxes, labels, (h, w) in zip(gt_boxes, gt_labels, img_shapes):
        scale = boxes.new_tensor([w, h, w, h])
        n_gt = int(boxes.shape[0])
        n_fake = num_slots(n_gt, neg_pos_ratio, max_instances) - n_gt
        f_labels, f_boxes = priors.sample(n_fake)
        per_image.append((torch.cat([labels.long(), f_labels.to(labels.device)]),
                          torch.cat([boxes.float() / scale, f_boxes.to(boxes.device)]), n_gt))
    k = max(len(lab) for lab, _, _ in per_image)
    b = len(per_image)
    dev = gt_boxes[0].device if len(gt_boxes) else priors.class_freq.device
    labels = torch.zeros(b, k, dtype=torch.long, device=dev)
    boxes = torch.zeros(b, k, 4, device=dev)
    real = torch.zeros(b, k, dtype=torch.bool, device=dev)
    valid = torch.zeros(b, k, dtype=torch.bool, device=dev)
    for i, (lab, box, n_gt) in enumerate(per_image):
        n = len(lab)
        labels[i, :n], boxes[i, :n] = lab, box
        real[i, :n_gt], valid[i, :n] = True, True
    wh_px = instance_sizes_px(boxes, img_shapes, valid, scale_bins)
    centre, size = (boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]
    jitter = (torch.rand_like(centre) * 2 - 1) * sample_range
    return InstanceBatch(labels, boxes, centre + jitter * size, wh_px, real, valid)


def scale_bins(size_px: Tensor, num_bins: int = 5) -> Tensor:
    """One-hot log2-like size bin of each size: ``clamp(trunc(1.44 ln s - 5), 0, bins - 1)``
    (bins < 64, 64-128, 128-256, 256-512, >= 512 px for 5 bins). (...,) -> (..., num_bins)."""
    idx = torch.trunc(1.44 * torch.log(size_px.clamp(min=1.0)) - 5).clamp(0, num_bins - 1)
    return F.one_hot(idx.long(), num_bins).to(size_px.dtype)


def mlp(dims: Sequence[int]) -> nn.Sequential:
    """Linear layers with ReLU between them: ``dims[0] -> ... -> dims[-1]``."""
    layers: List[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class InstanceEncoder(nn.Module):
    """Instance descriptor -> query, and the auxiliary identification head.

    descriptor = [one-hot class (C) | sine embedding of the point (2 * num_pos_feats) |
    size bins of w and h (2 * num_scale_bins)], then a 3-layer MLP to ``embed_dims``.
    The auxiliary head (3-layer MLP to 5) predicts a real/fake logit and the 4 distances from
    the point to the box edges (sigmoid, normalised coordinates).

    Args:
        num_classes: C.
        embed_dims: query width (256).
        num_pos_feats: sine frequencies per axis (128).
        num_scale_bins: size bins per side (5).
    """

    def __init__(self, num_classes: int, embed_dims: int = 256, num_pos_feats: int = 128,
                 num_scale_bins: int = 5) -> None:
        super().__init__()
        self.num_classes, self.num_pos_feats = num_classes, num_pos_feats
        self.num_scale_bins = num_scale_bins
        in_dims = num_classes + 2 * num_pos_feats + 2 * num_scale_bins
        self.encoder = mlp([in_dims, embed_dims, embed_dims, embed_dims])
        self.predictor = mlp([embed_dims, embed_dims, embed_dims, 5])

    def descriptors(self, ins: InstanceBatch) -> Tensor:
        """(B, K, C + 2 * num_pos_feats + 2 * num_scale_bins) descriptors of ``ins``."""
        one_hot = F.one_hot(ins.labels, self.num_classes).float()
        pos = coordinate_to_encoding(ins.points.float(), self.num_pos_feats)  # [y | x]
        bins = torch.cat([scale_bins(ins.wh_px[..., 0], self.num_scale_bins),
                          scale_bins(ins.wh_px[..., 1], self.num_scale_bins)], -1)
        return torch.cat([one_hot, pos, bins], -1)

    def forward(self, ins: InstanceBatch) -> Tensor:
        """(B, K, embed_dims) queries (padded slots are computed too and masked later)."""
        return self.encoder(self.descriptors(ins))

    def aux_loss(self, decoded: Tensor, ins: InstanceBatch) -> Tuple[Tensor, Tensor]:
        """The identification losses on decoded queries (B, K, embed_dims).

        Returns:
            conf: mean BCE of the real/fake logit over the filled slots.
            reg: sum over real instances and the 4 edges of |sigmoid(o) - e| / s, divided by
                the number of real instances (e: point-to-edge distances, s: box w, h, w, h).
        """
        out = self.predictor(decoded)
        valid = ins.valid
        conf = F.binary_cross_entropy_with_logits(out[..., 0][valid], ins.real[valid].float())
        real = ins.real
        p, box = ins.points[real], ins.boxes[real]
        if p.numel() == 0:
            return conf, out[..., 1:].sum() * 0.0
        edges = torch.cat([p - box[:, :2], box[:, 2:] - p], 1)
        size = (box[:, 2:] - box[:, :2]).repeat(1, 2).clamp(min=1e-6)
        reg = ((out[..., 1:][real].sigmoid() - edges).abs() / size).sum() / real.sum()
        return conf, reg
