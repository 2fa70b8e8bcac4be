"""Instance-conditional knowledge distillation (ICD, Kang et al., NeurIPS 2021)."""
from __future__ import annotations

import warnings
from typing import Dict, Optional, Sequence, Tuple

import torch
from mmdet.models.layers import SinePositionalEncoding
from mmdet.registry import MODELS
from torch import Tensor, nn

from ...distill_context import DistillContext
from ...losses.base import BaseDistillLoss
from ...losses.feature_imitation import align_teacher_feat, neck_channels
from .decoder import InstanceDecoder, weighted_value_mimic
from .instances import SCALE_BIN_SOURCES, InstanceBatch, InstanceEncoder, build_instances
from .priors import InstancePriors
from .tokens import flatten_levels


@MODELS.register_module()
class InstanceConditionalDistillLoss(BaseDistillLoss):
    """ICD: the student mimics the teacher's FPN values where the teacher's instance-conditional
    attention looks, while an auxiliary task trains that attention.

    Per step:
    1. GT instances plus fake ones (``neg_pos_ratio`` per GT, from :class:`InstancePriors`
       fitted on the training set by ``ICDPriorHook``) are encoded as queries.
    2. One cross-attention layer decodes them over the teacher's FPN tokens (all levels, padding
       masked, sine positions on the keys). The decoded queries predict real/fake and the box
       edges (aux losses), which trains the encoder and decoder.
    3. Token weights ``m = sum over real instances of softmax(A / T)`` (pre-softmax logits A,
       over all tokens) weight an MSE between the student's projected values and the teacher's
       values, both LayerNorm-ed per head.

    Returned terms (already multiplied by their weights): ``mimic`` (mimic_weight * L_ICD),
    ``aux_conf`` and ``aux_reg``. Keep ``loss_weight`` at 1: it would scale the aux terms too.

    The encoder, decoder and student value projection (``distill_losses.<name>``) are meant to
    be trained by their own AdamW (lr 1e-4, max-norm 0.01) through
    :class:`~mmkd.engine.DistillOptimWrapperConstructor`, as in the paper's code.

    Args:
        mimic_weight: lambda of L_ICD (8 for one-stage and SOLOv2/CondInst, 3 for R-CNNs).
        conf_weight / reg_weight: weights of the aux real/fake BCE and box-edge L1.
        embed_dims / num_heads / ffn_dims / num_pos_feats: decoder sizes (256 / 8 / 1024 / 128).
        neg_pos_ratio: fake instances per GT instance (5).
        max_instances: slot cap per image (300 one-stage, 100 R-CNN).
        sample_range: jitter of the descriptor point inside its box (0.3).
        temperature: T of the token weights (1).
        levels: FPN level indices to use (default all: P2-P6 for R-CNN, P3-P7 one-stage).
        bypass_iters: for this many iterations the student features are detached, so only the
            distillation modules learn at first (1000).
        inherit: removed. The inheriting start is ``DistillDetector``'s general option
            ``init_student_from_teacher=[...]`` (e.g. ``['neck', 'bbox_head']``);
            ``inherit=True`` raises with that fix, ``inherit=False`` only warns.
        num_classes: class count of the instance encoder (default: the student's).
        student_channels / teacher_channels: FPN widths when they cannot be read from the necks.
        chunk_mb: memory budget of one chunk of attention logits.
        scale_bins: which image size gives the pixel sizes of the descriptors' scale bins:
            ``'per_image'`` (each image's own; mmkd's fix) or ``'last_image'`` (every image uses
            the last image's, as the release does).
        fake_size_clip_sigma: the fake boxes' size Gaussian is truncated at +-this many sigma
            (released: 2.0); None leaves it untruncated.
        fake_box_clamp: clamp fake boxes to the image (released: True).

    Test seam: ``forward(ctx, instances=...)`` takes a ready :class:`InstanceBatch` instead of
    drawing one (the golden tests feed the release's own draw through it).
    """

    #: the aux terms train only the encoder and decoder (they read only the teacher's tokens):
    #: the loss-balance report leaves them out (docs/loss_balance.md)
    balance_exclude = ('aux_conf', 'aux_reg')
    term_weight_keys = {'mimic': 'mimic_weight', 'aux_conf': 'conf_weight',
                        'aux_reg': 'reg_weight'}

    def __init__(self, mimic_weight: float = 8.0, conf_weight: float = 1.0,
                 reg_weight: float = 1.0, embed_dims: int = 256, num_heads: int = 8,
                 ffn_dims: int = 1024, num_pos_feats: int = 128, neg_pos_ratio: float = 5.0,
                 max_instances: int = 300, sample_range: float = 0.3, temperature: float = 1.0,
                 levels: Optional[Sequence[int]] = None, bypass_iters: int = 1000,
                 inherit: Optional[bool] = None, num_classes: Optional[int] = None,
                 student_channels: Optional[int] = None,
                 teacher_channels: Optional[int] = None, chunk_mb: float = 256,
                 scale_bins: str = 'per_image', fake_size_clip_sigma: Optional[float] = 2.0,
                 fake_box_clamp: bool = True,
                 loss_weight: float = 1.0, weight_schedule: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(loss_weight=loss_weight, weight_schedule=weight_schedule,
                         init_cfg=init_cfg)
        if 2 * num_pos_feats != embed_dims:
            raise ValueError(f'num_pos_feats ({num_pos_feats}) must be embed_dims / 2 '
                             f'({embed_dims // 2}): the sine embedding is added to the keys')
        self.mimic_weight, self.conf_weight = float(mimic_weight), float(conf_weight)
        self.reg_weight = float(reg_weight)
        self.sizes = dict(embed_dims=embed_dims, num_heads=num_heads, ffn_dims=ffn_dims,
                          num_pos_feats=num_pos_feats)
        self.neg_pos_ratio, self.max_instances = float(neg_pos_ratio), int(max_instances)
        self.sample_range, self.temperature = float(sample_range), float(temperature)
        self.levels = None if levels is None else tuple(int(l) for l in levels)
        self.bypass_iters = int(bypass_iters)
        if inherit:
            raise ValueError(
                'InstanceConditionalDistillLoss(inherit=True) was removed: the inheriting start '
                'is now the DistillDetector option init_student_from_teacher. Delete inherit '
                "from the loss config and set model.init_student_from_teacher=['neck', "
                "'bbox_head'] (one-stage), ['neck', 'rpn_head', 'roi_head'] (R-CNN) or the "
                'modules your pair shares.')
        if inherit is not None:
            warnings.warn('InstanceConditionalDistillLoss(inherit=False) is deprecated and has '
                          'no effect; delete the key (DistillDetector.init_student_from_teacher '
                          'replaces it).', DeprecationWarning, stacklevel=2)
        self._num_classes = num_classes
        self._channels = (student_channels, teacher_channels)
        self.chunk_bytes = int(chunk_mb * 2**20)
        if scale_bins not in SCALE_BIN_SOURCES:
            raise ValueError(f'InstanceConditionalDistillLoss: scale_bins={scale_bins!r} is not '
                             f"valid; choose one of {', '.join(map(repr, SCALE_BIN_SOURCES))}.")
        if fake_size_clip_sigma is not None and not float(fake_size_clip_sigma) > 0:
            raise ValueError('InstanceConditionalDistillLoss: fake_size_clip_sigma must be > 0 '
                             f'or None, got {fake_size_clip_sigma!r}.')
        self.scale_bins = scale_bins
        self.fake_sampling = dict(size_clip_sigma=fake_size_clip_sigma,
                                  clamp_to_image=bool(fake_box_clamp))

    def setup(self, student: nn.Module, teacher: nn.Module) -> None:
        super().setup(student, teacher)
        from ...detectors.distill_detector import num_classes_of
        n_cls = self._num_classes or num_classes_of(student)
        c_s = self._channels[0] or neck_channels(student)
        c_t = self._channels[1] or neck_channels(teacher)
        if n_cls is None or c_s is None or c_t is None:
            raise ValueError('InstanceConditionalDistillLoss: cannot read the class count or the '
                             f'FPN widths (got classes={n_cls}, student={c_s}, teacher={c_t}); '
                             'set num_classes / student_channels / teacher_channels.')
        e, p = self.sizes['embed_dims'], self.sizes['num_pos_feats']
        self.priors = InstancePriors(int(n_cls), **self.fake_sampling)
        self.encoder = InstanceEncoder(int(n_cls), e, p)
        self.decoder = InstanceDecoder(int(c_t), e, self.sizes['num_heads'],
                                       self.sizes['ffn_dims'], 2 * p, self.chunk_bytes)
        self.student_value = nn.Linear(int(c_s), e)  # the student adapter
        self.pos_encoder = SinePositionalEncoding(num_feats=p, normalize=True)

    def _levels(self, feats: Tuple[Tensor, ...]) -> Tuple[Tensor, ...]:
        return feats if self.levels is None else tuple(feats[i] for i in self.levels)

    def forward(self, ctx: DistillContext,
                instances: Optional[InstanceBatch] = None) -> Dict[str, Tensor]:
        """The three ICD terms of one step.

        Args:
            ctx: the step.
            instances: use these instances instead of drawing real + fake ones from the GT and
                the priors (a test seam); their boxes are normalised per image as
                :func:`build_instances` makes them.
        """
        s_feats, t_feats = self._levels(ctx.student_feats), self._levels(ctx.teacher_feats)
        if len(s_feats) != len(t_feats):
            raise ValueError(f'ICD: student has {len(s_feats)} FPN levels, teacher '
                             f'{len(t_feats)}; set levels= to pick matching ones')
        t_feats = tuple(align_teacher_feat(s, t, i) for i, (s, t) in
                        enumerate(zip(s_feats, t_feats)))
        if ctx.progress.iter < self.bypass_iters:
            s_feats = tuple(f.detach() for f in s_feats)
        shapes = [tuple(ds.img_shape) for ds in ctx.data_samples]
        t_seq = flatten_levels(t_feats, shapes, ctx.batch_input_shape, self.pos_encoder)
        # the student side needs only its tokens (no positions or padding masks)
        s_tokens = torch.cat([f.flatten(2).transpose(1, 2) for f in s_feats], 1)  # (B, S, C_s)

        ins = instances if instances is not None else build_instances(
            ctx.gt_bboxes, ctx.gt_labels, shapes, self.priors, self.neg_pos_ratio,
            self.max_instances, self.sample_range, self.scale_bins)
        queries = self.encoder(ins)
        decoded, t_values, token_weight = self.decoder(
            queries, t_seq.tokens, t_seq.pos, t_seq.pad_mask, ins.real, self.temperature)
        s_values = self.decoder.split_heads(self.student_value(s_tokens))
        mimic = weighted_value_mimic(s_values, t_values, token_weight)
        conf, reg = self.encoder.aux_loss(decoded, ins)
        return dict(mimic=self.mimic_weight * mimic, aux_conf=self.conf_weight * conf,
                    aux_reg=self.reg_weight * reg)
