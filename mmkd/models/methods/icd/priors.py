"""Class and box-size priors for ICD's fake instances, measured on the training annotations."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset


def iter_annotations(dataset) -> Iterator[Tuple[int, float, float]]:
    """Yield ``(label, w / W, h / H)`` for every non-ignored box of a mmdet dataset.

    Dataset wrappers (RepeatDataset, ClassBalancedDataset: ``.dataset``; ConcatDataset:
    ``.datasets``) are unwrapped so each image is read once.
    """
    if hasattr(dataset, 'datasets'):  # ConcatDataset
        for d in dataset.datasets:
            yield from iter_annotations(d)
        return
    if isinstance(getattr(dataset, 'dataset', None), Dataset):  # Repeat/ClassBalanced wrappers
        yield from iter_annotations(dataset.dataset)
        return
    if hasattr(dataset, 'full_init'):
        dataset.full_init()
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        W, H = float(info.get('width', 0) or 0), float(info.get('height', 0) or 0)
        if W <= 0 or H <= 0:
            continue
        for inst in info.get('instances', []):
            if inst.get('ignore_flag', 0):
                continue
            x1, y1, x2, y2 = inst['bbox']
            if x2 > x1 and y2 > y1:
                yield int(inst['bbox_label']), (x2 - x1) / W, (y2 - y1) / H


@dataclass
class FakeDraw:
    """One draw of fake instances (normalised image coordinates).

    Attributes:
        labels: (n,) classes.
        centres: (n, 2) box centres ``(x, y)``, from U(0.03, 0.97).
        z: (n, 2) the standard-normal deviates of (w, h), after the truncation at
            ``size_clip_sigma`` (if any).
        wh: (n, 2) the sampled sizes ``mean + z * std`` clipped to ``size_range``.
        boxes: (n, 4) ``x1, y1, x2, y2`` as used: ``centre -+ wh / 2``, clamped to the image
            ``[0, 1]`` when ``clamp_to_image``.
    """

    labels: Tensor
    centres: Tensor
    z: Tensor
    wh: Tensor
    boxes: Tensor


class InstancePriors(nn.Module):
    """Where fake instances come from: a class prior and per-class box-size Gaussians.

    The original code read COCO numbers from a JSON file whose keys it sorted as strings, which
    permuted classes 2..79 against their priors (only 0 and 1 kept their own). Here the priors
    are indexed by the dataset's own label ids and measured from its annotations (:meth:`fit`,
    run by ``ICDPriorHook`` before training); until then they are uniform over classes with
    boxes of 0.2 +- 0.1 of the image side. They are buffers, so a resumed run keeps them.

    Sampling (:meth:`draw`) follows the release by default: the size deviate is truncated at
    +-2 sigma, the size clipped to ``size_range``, and the box clamped to the image.

    Args:
        num_classes: C.
        size_range: fake (w, h) are clipped to this range (fractions of the image side).
        size_clip_sigma: the size Gaussian's deviate is clipped to +-this many sigma before the
            range clip (released: 2.0); None leaves it untruncated.
        clamp_to_image: clamp fake boxes to the image (released: True); False lets them cross
            the border (mmkd's earlier behaviour).
    """

    def __init__(self, num_classes: int, size_range: Tuple[float, float] = (0.002, 0.7),
                 size_clip_sigma: Optional[float] = 2.0, clamp_to_image: bool = True) -> None:
        super().__init__()
        self.size_range = (float(size_range[0]), float(size_range[1]))
        if size_clip_sigma is not None and not float(size_clip_sigma) > 0:
            raise ValueError(f'size_clip_sigma must be > 0 or None, got {size_clip_sigma}')
        self.size_clip_sigma = None if size_clip_sigma is None else float(size_clip_sigma)
        self.clamp_to_image = bool(clamp_to_image)
        self.register_buffer('class_freq', torch.full((num_classes, ), 1.0 / num_classes))
        self.register_buffer('wh_mean', torch.full((num_classes, 2), 0.2))
        self.register_buffer('wh_std', torch.full((num_classes, 2), 0.1))
        self.register_buffer('fitted', torch.zeros((), dtype=torch.bool))

    @property
    def num_classes(self) -> int:
        return int(self.class_freq.numel())

    @torch.no_grad()
    def fit(self, dataset) -> int:
        """Measure the priors on ``dataset``'s annotations; returns the number of boxes used.

        Classes without boxes get probability 0 and the size statistics of all boxes.
        """
        rows = np.asarray(list(iter_annotations(dataset)), dtype=np.float64).reshape(-1, 3)
        if len(rows) == 0:
            return 0
        labels = rows[:, 0].astype(np.int64)
        if labels.max() >= self.num_classes or labels.min() < 0:
            raise ValueError(f'ICD priors: the dataset has label {int(labels.max())} but the '
                             f'student has {self.num_classes} classes; set num_classes to match.')
        wh = rows[:, 1:]
        counts = np.bincount(labels, minlength=self.num_classes).astype(np.float64)
        all_mean, all_std = wh.mean(0), wh.std(0) if len(wh) > 1 else np.full(2, 0.1)
        mean = np.tile(all_mean, (self.num_classes, 1))
        std = np.tile(all_std, (self.num_classes, 1))
        for c in np.nonzero(counts >= 2)[0]:
            sel = wh[labels == c]
            mean[c], std[c] = sel.mean(0), sel.std(0)
        dev = self.class_freq.device
        self.class_freq.copy_(torch.as_tensor(counts / counts.sum(), device=dev))
        self.wh_mean.copy_(torch.as_tensor(mean, device=dev))
        self.wh_std.copy_(torch.as_tensor(np.maximum(std, 1e-3), device=dev))
        self.fitted.fill_(True)
        return len(rows)

    def draw(self, n: int) -> FakeDraw:
        """Draw ``n`` fake instances with every intermediate kept (see :class:`FakeDraw`).

        Class ~ ``class_freq``; centre ~ U(0.03, 0.97)^2; z ~ N(0, 1) per side, clipped to
        +-``size_clip_sigma``; (w, h) = ``wh_mean[c] + z * wh_std[c]`` clipped to
        ``size_range``; the box is ``centre -+ (w, h) / 2``, clamped to [0, 1] when
        ``clamp_to_image``.
        """
        dev = self.class_freq.device
        labels = torch.multinomial(self.class_freq.float(), n, replacement=True) if n else \
            torch.zeros(0, dtype=torch.long, device=dev)
        centre = torch.rand(n, 2, device=dev) * 0.94 + 0.03
        z = torch.randn(n, 2, device=dev)
        if self.size_clip_sigma is not None:
            z = z.clamp(-self.size_clip_sigma, self.size_clip_sigma)
        wh = (self.wh_mean[labels].float() + z * self.wh_std[labels].float()).clamp(
            *self.size_range)
        boxes = torch.cat([centre - wh / 2, centre + wh / 2], 1).float()
        if self.clamp_to_image:
            boxes = boxes.clamp(0.0, 1.0)
        return FakeDraw(labels, centre, z, wh, boxes)

    def sample(self, n: int) -> Tuple[Tensor, Tensor]:
        """Draw ``n`` fake instances: labels (n,) and normalised boxes (n, 4) ``x1, y1, x2, y2``
        (see :meth:`draw`)."""
        d = self.draw(n)
        return d.labels, d.boxes
