"""CropClassifier: the image-classifier teacher of DICOD (backbone, global pooling, linear head).

It is an ordinary registered model, so a DistillDetector builds it from a config, loads it
strictly from ``teacher_ckpt``, freezes it and converts the student's batch to the input
convention declared by its ``data_preprocessor`` (mean, std, channel order).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple, Union

import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.model import BaseModel
from torch import Tensor, nn


class LinearClsHead(nn.Module):
    """Dropout (optional) then one linear layer: (N, C_in) pooled features -> (N, K) logits.

    ``num_classes`` is an attribute so :func:`mmkd.models.detectors.num_classes_of` reads it.
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f'num_classes must be >= 2, got {num_classes}')
        self.in_channels, self.num_classes = int(in_channels), int(num_classes)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(self.in_channels, self.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in) -> (N, num_classes)."""
        return self.fc(self.dropout(x))


@MODELS.register_module()
class CropClassifier(BaseModel):
    """An object-crop classifier: ``backbone`` -> global average pool -> linear head.

    Args:
        backbone: an mmdet backbone config with one output (e.g. ``ResNet`` with
            ``out_indices=(3,)``); its last output is pooled.
        num_classes: number of object classes (no background class).
        in_channels: channels of the pooled feature; None reads ``backbone.feat_dim`` (mmdet's
            ResNet sets it).
        dropout: dropout before the linear layer.
        data_preprocessor: input convention of the classifier, e.g. ``dict(type=
            'ImgDataPreprocessor', mean=[...], std=[...], bgr_to_rgb=True)``. A DistillDetector
            reads mean/std/bgr_to_rgb from it to convert the student's images;
            ``tools/train_cls_teacher.py`` normalises its crops with it.
        init_cfg: mmengine init config (e.g. the backbone's ImageNet weights).
    """

    def __init__(self, backbone: dict, num_classes: int, in_channels: Optional[int] = None,
                 dropout: float = 0.0, data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[Union[dict, list]] = None) -> None:
        if data_preprocessor is None:
            data_preprocessor = dict(type='ImgDataPreprocessor')
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        if in_channels is None:
            in_channels = getattr(self.backbone, 'feat_dim', None)
            if in_channels is None:
                raise ValueError(f'{type(self.backbone).__name__} has no feat_dim: pass '
                                 'in_channels (the channels of its last output) to '
                                 'CropClassifier')
        out_indices = getattr(self.backbone, 'out_indices', None)
        n_stages = len(getattr(self.backbone, 'res_layers', ()) or ())
        if out_indices is not None and n_stages and tuple(out_indices)[-1] != n_stages - 1:
            raise ValueError(f'CropClassifier pools the last backbone stage; set the backbone\'s '
                             f'out_indices=({n_stages - 1},) (got {tuple(out_indices)}) or pass '
                             'in_channels for the stage you want')
        self.head = LinearClsHead(int(in_channels), num_classes, dropout)

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    # ---- features --------------------------------------------------------------------------
    def stem(self, x: Tensor) -> Tensor:
        """The backbone's stem: (N, 3, S, S) -> (N, C_stem, S/4, S/4) for a ResNet
        (conv1 -> norm1 -> relu -> maxpool, or ``stem`` -> maxpool with ``deep_stem``)."""
        bb = self.backbone
        if getattr(bb, 'deep_stem', False):
            x = bb.stem(x)
        elif hasattr(bb, 'conv1') and hasattr(bb, 'norm1'):
            x = bb.relu(bb.norm1(bb.conv1(x)))
        else:
            raise TypeError(f'CropClassifier.stem supports mmdet ResNet-style backbones; '
                            f'{type(bb).__name__} has neither deep_stem nor conv1/norm1')
        return bb.maxpool(x)

    def _after_stem(self, x: Tensor) -> Tensor:
        """Stem output -> (N, C_in) pooled feature of the last ResNet stage."""
        bb = self.backbone
        for name in bb.res_layers:
            x = getattr(bb, name)(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def forward_with_stem(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """(N, 3, S, S) normalised crops -> ((N, K) logits, (N, C_stem, S/4, S/4) stem)."""
        s = self.stem(x)
        return self.head(self._after_stem(s)), s

    def logits(self, x: Tensor) -> Tensor:
        """(N, 3, S, S) crops in this model's input convention -> (N, K) logits."""
        if hasattr(self.backbone, 'res_layers'):
            return self.forward_with_stem(x)[0]
        feats = self.backbone(x)
        last = feats[-1] if isinstance(feats, (tuple, list)) else feats
        return self.head(F.adaptive_avg_pool2d(last, 1).flatten(1))

    # ---- BaseModel API ---------------------------------------------------------------------
    def forward(self, inputs: Tensor, data_samples: Optional[Tensor] = None,
                mode: str = 'tensor') -> Union[Tensor, Dict[str, Tensor]]:
        """``'tensor'``: (N, K) logits; ``'loss'``: cross-entropy against ``data_samples``
        ((N,) class indices); ``'predict'``: (N, K) class probabilities."""
        logits = self.logits(inputs)
        if mode == 'tensor':
            return logits
        if mode == 'loss':
            if data_samples is None:
                raise ValueError("mode='loss' needs data_samples: the (N,) class labels")
            return dict(loss_cls=F.cross_entropy(logits, data_samples.long()))
        if mode == 'predict':
            return logits.softmax(-1)
        raise ValueError(f"mode must be 'tensor', 'loss' or 'predict', got {mode!r}")

    def normalise(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) raw pixels in BGR (as cv2 loads them), float -> this model's input
        convention (channel swap, then ``(x - mean) / std`` from its data_preprocessor)."""
        dp = self.data_preprocessor
        x = images.float()
        if getattr(dp, '_channel_conversion', False):
            x = x.flip(1)
        if getattr(dp, '_enable_normalize', False):
            x = (x - dp.mean.to(x)) / dp.std.to(x)
        return x


def build_crop_classifier(cfg: dict) -> CropClassifier:
    """Build a :class:`CropClassifier` from a model config, checking the type."""
    model = MODELS.build(cfg)
    if not isinstance(model, CropClassifier):
        raise TypeError(f'expected a CropClassifier config, got {type(model).__name__}')
    return model


__all__ = ['CropClassifier', 'LinearClsHead', 'build_crop_classifier']
