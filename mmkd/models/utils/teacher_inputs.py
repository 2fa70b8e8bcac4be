"""Give the teacher its own input normalisation when it differs from the student's.

The batch reaching the distiller was preprocessed with the student's settings (mean, std,
channel order, padding). A teacher trained with other settings (e.g. a caffe-style R101 with BGR
input and std 1 under a pytorch-style student) would silently see wrong inputs, which is what
MMRazor does. This adapter undoes the student's normalisation, applies the teacher's, re-fills the
padding with the teacher's pad value and pads further when the teacher needs a larger size
divisor. Batch augmentations run once, so both models see the same geometry.

When the teacher pads further, its feature maps cover the extra padding too (a 96 px student
batch becomes 128 px for a ``pad_size_divisor=64`` teacher: 32x32 instead of 24x24 at stride 4).
:meth:`TeacherInputAdapter.crop_features` cuts every level back to the student's extent, so the
losses compare the same pixels level by level.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class NormSettings:
    """Input settings read from a data_preprocessor config (mmengine/mmdet conventions)."""

    mean: Optional[tuple] = None
    std: Optional[tuple] = None
    swap_channels: bool = False  # bgr_to_rgb or rgb_to_bgr
    pad_size_divisor: int = 1
    pad_value: float = 0.0

    @classmethod
    def from_cfg(cls, cfg: Optional[dict]) -> 'NormSettings':
        cfg = dict(cfg or {})
        mean, std = cfg.get('mean'), cfg.get('std')
        return cls(mean=tuple(float(m) for m in mean) if mean is not None else None,
                   std=tuple(float(s) for s in std) if std is not None else None,
                   swap_channels=bool(cfg.get('bgr_to_rgb', False) or cfg.get('rgb_to_bgr', False)),
                   pad_size_divisor=int(cfg.get('pad_size_divisor', 1) or 1),
                   pad_value=float(cfg.get('pad_value', 0)))

    def describe(self) -> str:
        return (f'mean={self.mean}, std={self.std}, swap_channels={self.swap_channels}, '
                f'pad_size_divisor={self.pad_size_divisor}, pad_value={self.pad_value}')


class TeacherInputAdapter:
    """Convert a student-preprocessed batch into the teacher's input convention.

    Args:
        student_cfg: the student's (i.e. the distiller's) data_preprocessor config.
        teacher_cfg: the teacher's data_preprocessor config; None means "same as the student".
    """

    def __init__(self, student_cfg: Optional[dict], teacher_cfg: Optional[dict]) -> None:
        self.s = NormSettings.from_cfg(student_cfg)
        self.t = NormSettings.from_cfg(teacher_cfg) if teacher_cfg is not None else self.s
        self.same_norm = (self.s.mean, self.s.std, self.s.swap_channels, self.s.pad_value) == (
            self.t.mean, self.t.std, self.t.swap_channels, self.t.pad_value)
        self.extra_pad = self.t.pad_size_divisor > 1 and (
            self.s.pad_size_divisor % self.t.pad_size_divisor != 0)
        self.identity = self.same_norm and not self.extra_pad

    def describe(self) -> str:
        """One line for the log saying what the adapter does."""
        if self.identity:
            return ("teacher and student input settings match; the teacher sees the student's "
                    'batch as it is')
        return (f'teacher input settings differ from the student\'s; converting each batch '
                f'from [{self.s.describe()}] to [{self.t.describe()}]')

    @staticmethod
    def _vec(v: Optional[tuple], default: float, like: Tensor) -> Tensor:
        vals = v if v is not None else (default, ) * like.shape[1]
        return like.new_tensor(vals).view(1, -1, 1, 1)

    def __call__(self, inputs: Tensor, img_shapes: Sequence[Sequence[int]]) -> Tensor:
        """Map student inputs to teacher inputs.

        Args:
            inputs: (B, C, H, W) batch normalised and padded by the student's preprocessor.
            img_shapes: B (h, w) sizes of the valid (unpadded) image area.

        Returns:
            (B, C, H', W') teacher inputs; H' >= H and W' >= W only when the teacher's
            ``pad_size_divisor`` requires it.
        """
        if self.identity:
            return inputs
        x = inputs
        if not self.same_norm:
            x = x * self._vec(self.s.std, 1.0, x) + self._vec(self.s.mean, 0.0, x)
            if self.s.swap_channels != self.t.swap_channels:
                x = x.flip(1)
            x = (x - self._vec(self.t.mean, 0.0, x)) / self._vec(self.t.std, 1.0, x)
            h, w = x.shape[-2:]
            rows = torch.arange(h, device=x.device)[None, :, None]
            cols = torch.arange(w, device=x.device)[None, None, :]
            valid = torch.stack([(rows[0] < int(s[0])) & (cols[0] < int(s[1])) for s in img_shapes])
            x = torch.where(valid[:, None], x, x.new_tensor(self.t.pad_value))
        if self.extra_pad:
            d = self.t.pad_size_divisor
            h, w = x.shape[-2:]
            ph, pw = math.ceil(h / d) * d - h, math.ceil(w / d) * d - w
            if ph or pw:
                x = F.pad(x, (0, pw, 0, ph), value=self.t.pad_value)
        return x

    @staticmethod
    def crop_features(feats: Sequence[Tensor], student_hw: Sequence[int],
                      teacher_hw: Sequence[int]) -> Tuple[Tensor, ...]:
        """Cut the teacher's feature maps back to the student's input extent.

        Args:
            feats: the teacher's (B, C, h_l, w_l) maps, computed from a (B, C, H_t, W_t) input.
            student_hw: (H_s, W_s), the student's batch size; H_s <= H_t and W_s <= W_t.
            teacher_hw: (H_t, W_t), the teacher's batch size (extra padding bottom/right).

        Returns:
            The maps cropped to (ceil(H_s / s_l), ceil(W_s / s_l)), with s_l the level's stride
            (the power of two for which (ceil(H_t / s_l), ceil(W_t / s_l)) = (h_l, w_l): strided
            convolutions and poolings with padding round up). A map that fits no power-of-two
            stride is returned unchanged, so a real stride mismatch still reaches the losses'
            size check.
        """
        hs, ws = int(student_hw[0]), int(student_hw[1])
        ht, wt = int(teacher_hw[0]), int(teacher_hw[1])
        if (hs, ws) == (ht, wt):
            return tuple(feats)
        out = []
        for f in feats:
            h, w = f.shape[-2:]
            for k in range(16):
                stride = 2 ** k
                if math.ceil(ht / stride) == h and math.ceil(wt / stride) == w:
                    f = f[..., :math.ceil(hs / stride), :math.ceil(ws / stride)]
                    break
            out.append(f)
        return tuple(out)
