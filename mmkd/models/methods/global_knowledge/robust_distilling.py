"""RDM: robustness-weighted distillation of the Global-Knowledge method (Tang et al., 2022).

Every instance (by default the student's positive sampled RoIs, labelled with their GT class) is
described by its box-pooled FPN feature (:mod:`.descriptors`) in the student and the teacher
space. Its robustness
``r = 1 - |max cos(student desc, student prototypes of its class) - max cos(teacher desc,
teacher prototypes of its class)|`` says whether the two spaces agree about it; r then weights

* a decoupled FPN imitation (per-level 3x3 adapters, foreground mask painted with r over the
  instance boxes, separately normalised foreground and background terms, bg weight 4);
* a soft-label KL on the R-CNN classifier of the positive RoIs (T = 2, RoI-level r);
* optionally the global relation loss: each instance's similarities to *all* prototypes of its
  level, aligned between the spaces (SmoothL1, weighted by r), which the released code could
  not run.

The feature terms (imitation, relation) are attenuated by ``1 - epoch / max_epochs``.
See docs/methods/global_knowledge.md for every choice where the original is under-specified.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.dist import all_gather, broadcast, get_rank, get_world_size
from mmengine.logging import MessageHub, print_log
from torch import Tensor, nn

from ...distill_context import DistillContext
from ...losses.base import BaseDistillLoss, require_finite
from ...losses.feature_imitation import align_teacher_feat, neck_channels
from ...losses.functional import soft_label_kl
from ...losses.weight_schedule import WeightSchedule
from ...utils.box_mask import paint_box_mask, paint_box_mask_overwrite
from ...utils.box_pool import boxes_to_rois
from .descriptors import DESCRIPTORS, box_descriptors, check_choice, level_strides
from .prototype_generation import PrototypeGenerationModule, robustness

#: ``mask_painting`` choices: the released integer cells with overwrite, or mmkd's cover + max.
MASK_PAINTINGS = ('int_overwrite', 'cover_max')
#: ``negative_r`` choices: keep negative robustness in the fg term (released) or clamp it at 0.
NEGATIVE_R = ('keep', 'clamp')


def gk_levels(boxes: Tensor, num_levels: int) -> Tensor:
    """The Global-Knowledge code's level of each box for the masks:
    ``floor(log2(sqrt((w + 1)(h + 1)) / 56))`` clamped to ``[0, num_levels - 1]``."""
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) + 1
    h = (boxes[:, 3] - boxes[:, 1]).clamp(min=0) + 1
    lvl = torch.floor(torch.log2(torch.sqrt(w * h) / 56.0 + 1e-6))
    return lvl.clamp(0, num_levels - 1).long()


def gk_masked_error(diff: Tensor, mask: Tensor) -> Tensor:
    """``sum(mask * diff^2) / max(1, 2 * C * sum(mask))`` (the released code's normalisation).

    Args:
        diff: (B, C, H, W); mask: (B, H, W).
    """
    sq = diff.float().pow(2)
    m = mask.to(sq)[:, None]
    return (sq * m).sum() / torch.clamp(2.0 * diff.shape[1] * m.sum(), min=1.0)


@MODELS.register_module()
class RobustDistillingModule(BaseDistillLoss):
    """Global-Knowledge distillation (PGM prototypes + RDM losses).

    Two-stage students (Faster R-CNN) follow the released code. One-stage students with an
    anchor-based head (RetinaNet) follow its one-stage path: the instances are the positive
    anchors, each painted and scored at its own FPN level, the feature terms are summed over
    levels, and the soft label is a softmax KL over the classes of the positive anchors' logits.

    Args:
        boxes: instances used by the feature terms: ``'auto'`` (``'pos_rois'`` for two-stage,
            ``'pos_anchors'`` for one-stage students), ``'pos_rois'`` (the student's positive
            sampled RoIs, as the paper), ``'pos_anchors'``, or ``'gt'`` (the GT boxes).
        level_reduction: ``'mean'`` or ``'sum'`` of the feature terms over levels; None
            follows the original (mean for two-stage, sum for one-stage).
        fg_weight / bg_weight: weights of the foreground / background imitation terms (1, 4).
        soft_weight: weight of the RoI soft-label KL (1); 0 disables it.
        temperature: its temperature (2).
        relation_weight: weight of the global relation loss (0 = off; the code's value was 5).
        feat_schedule: :class:`~mmkd.models.losses.WeightSchedule` kwargs for the feature terms;
            default the paper's ``1 - epoch / max_epochs`` attenuation. ``{}`` disables it.
        descriptor: how a box is pooled into a descriptor (robustness, relation term and the
            offline PGM pass): ``'int_crop'`` (released: mean over the integer cells
            ``int(|x1|/s) .. int(|x2|/s)``, both ends inclusive) or ``'roi_align'`` (mmkd's
            earlier choice: RoIAlign 1x1, the bilinear mean over the box itself).
        mask_painting: how boxes paint the fg mask: ``'int_overwrite'`` (released: cells
            ``int(x1/s) .. int(x2/s) - 1``, a later box overwrites, a box with an empty range
            sets one cell to the max) or ``'cover_max'`` (mmkd's earlier choice: every cell the
            box overlaps, the larger r wins, independent of the box order).
        negative_r: ``'keep'`` (released: a box with r < 0 paints r, the fg term can go
            negative and the bg mask there is ``1 - r``) or ``'clamp'`` (fg mask ``max(r, 0)``,
            bg mask ``[M <= 0]``).
        strides: per-level FPN strides in input pixels for descriptors and masks (the release
            uses the RPN anchor strides, e.g. ``[4, 8, 16, 32, 64]``); None infers them as
            batch input size / map size, which differs from the anchor stride on a level whose
            map size was rounded up (e.g. P6 of an 800-px input: 800 / 13 = 61.5).
        pgm: prototype generation settings:
            ``mode``: ``'offline'`` (the paper: an extra pass over the training set before each
            epoch, run by :class:`PGMHook`) or ``'online'`` (a per-class memory bank filled from
            this step's GT boxes, no extra forward pass; prototypes refreshed at each epoch
            start and, with ``refresh_interval``, every N iterations);
            ``num_prototypes`` (10), ``alpha`` (10), ``bandwidth`` (0.1), ``drop_ratio`` (0.4);
            ``min_size`` (30 px: GT boxes used for prototypes must be larger in both sides);
            ``max_samples`` (800 images per class, offline); ``bank_size`` (instances per class
            and level kept by the online bank, 100); ``refresh_interval`` (None).
    """

    term_weight_keys = {'fg': 'fg_weight', 'bg': 'bg_weight', 'soft': 'soft_weight',
                        'rel': 'relation_weight'}

    def __init__(self, boxes: str = 'auto', level_reduction: Optional[str] = None,
                 fg_weight: float = 1.0, bg_weight: float = 4.0,
                 soft_weight: float = 1.0, temperature: float = 2.0,
                 relation_weight: float = 0.0, feat_schedule: Optional[dict] = None,
                 pgm: Optional[dict] = None, descriptor: str = 'int_crop',
                 mask_painting: str = 'int_overwrite', negative_r: str = 'keep',
                 strides: Optional[Sequence[float]] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.descriptor = check_choice('descriptor', descriptor, DESCRIPTORS)
        self.mask_painting = check_choice('mask_painting', mask_painting, MASK_PAINTINGS)
        self.negative_r = check_choice('negative_r', negative_r, NEGATIVE_R)
        self.strides = None if strides is None else [float(x) for x in strides]
        check_choice('boxes', boxes, ('auto', 'pos_rois', 'pos_anchors', 'gt'))
        check_choice('level_reduction', level_reduction, (None, 'mean', 'sum'))
        self.boxes, self.level_reduction = boxes, level_reduction
        self.fg_weight, self.bg_weight = float(fg_weight), float(bg_weight)
        self.soft_weight, self.temperature = float(soft_weight), float(temperature)
        self.relation_weight = float(relation_weight)
        self.feat_schedule = WeightSchedule(**(dict(decay='linear', by='epoch')
                                               if feat_schedule is None else feat_schedule))
        self.pgm_cfg = dict(mode='offline', num_prototypes=10, alpha=10.0, bandwidth=0.1,
                            drop_ratio=0.4, min_size=30.0, max_samples=800, bank_size=100,
                            refresh_interval=None)
        unknown = set(pgm or {}) - set(self.pgm_cfg)
        if unknown:
            raise ValueError(f'unknown pgm settings {sorted(unknown)}; '
                             f'known: {sorted(self.pgm_cfg)}')
        self.pgm_cfg.update(pgm or {})
        check_choice('pgm.mode', self.pgm_cfg['mode'], ('offline', 'online'))
        self.pgm: Optional[PrototypeGenerationModule] = None
        self.adapters: Optional[nn.ModuleList] = None
        self._warned_not_ready = False

    # ---- build ----------------------------------------------------------------------------
    def setup(self, student: nn.Module, teacher: nn.Module) -> None:
        """Size the adapters, prototypes and memory bank from the two models."""
        self.two_stage = bool(getattr(student, 'with_roi_head', False))
        if self.boxes == 'auto':
            self.boxes = 'pos_rois' if self.two_stage else 'pos_anchors'
        if (self.boxes == 'pos_rois') != self.two_stage and self.boxes != 'gt':
            raise ValueError(f"boxes='{self.boxes}' does not fit a "
                             f"{'two' if self.two_stage else 'one'}-stage student; use 'auto'.")
        if self.level_reduction is None:
            self.level_reduction = 'mean' if self.two_stage else 'sum'
        soft = self.soft_weight > 0
        if self.two_stage:
            needs = ({'student_rois'} if self.boxes == 'pos_rois' or soft else set()) | (
                {'teacher_roi_head'} if soft else set())
        else:
            needs = ({'student_dense_targets'} if self.boxes == 'pos_anchors' or soft
                     else set()) | ({'teacher_head'} if soft else set())
        self.needs = frozenset(needs)
        super().setup(student, teacher)
        from ...detectors.distill_detector import num_classes_of
        cs, ct = neck_channels(student), neck_channels(teacher)
        num_levels = getattr(getattr(student, 'neck', None), 'num_outs', None)
        t_levels = getattr(getattr(teacher, 'neck', None), 'num_outs', None)
        num_classes = num_classes_of(student)
        if None in (cs, ct, num_levels, num_classes):
            raise ValueError('RobustDistillingModule needs FPN necks (out_channels, num_outs) '
                             'and a class count on the student.')
        if num_levels != t_levels:
            raise ValueError(f'student FPN has {num_levels} levels and teacher {t_levels}; '
                             'Global-Knowledge distillation pairs them level by level.')
        self.num_levels, self.num_classes = int(num_levels), int(num_classes)
        if self.strides is not None and len(self.strides) != self.num_levels:
            raise ValueError(f'RobustDistillingModule: strides has {len(self.strides)} entries '
                             f'but the FPN has {self.num_levels} levels; give one per level.')
        self.adapters = nn.ModuleList(nn.Conv2d(cs, ct, 3, padding=1) for _ in range(num_levels))
        c = self.pgm_cfg
        self.pgm = PrototypeGenerationModule(num_levels, num_classes, cs, ct, c['num_prototypes'],
                                             c['alpha'], c['bandwidth'], c['drop_ratio'])
        if c['mode'] == 'online':
            k = int(c['bank_size'])
            self.register_buffer('bank_s', torch.zeros(num_levels, num_classes, k, cs))
            self.register_buffer('bank_t', torch.zeros(num_levels, num_classes, k, ct))
            self.register_buffer('bank_count', torch.zeros(num_levels, num_classes,
                                                           dtype=torch.long))
            self.register_buffer('last_refresh_epoch', torch.full((), -1, dtype=torch.long))
        if soft and self.two_stage:
            self.roi_strides = list(student.roi_head.bbox_roi_extractor.featmap_strides)

    # ---- prototypes -----------------------------------------------------------------------
    @torch.no_grad()
    def generate_prototypes(self, desc_s: Sequence[Tensor], desc_t: Sequence[Tensor],
                            labels: Sequence[Tensor]) -> None:
        """Generate prototypes from per-level descriptors held by *this rank*.

        With several processes every rank contributes its descriptors; they are gathered,
        rank 0 runs the generation and broadcasts the buffers, so all ranks end identical.
        """
        if get_world_size() > 1:
            gathered = [[torch.cat(all_gather(x.contiguous()))
                         for x in _pad_for_gather(level_parts)]
                        for level_parts in zip(desc_s, desc_t, labels)]
            desc_s = [_unpad(g[0], g[3]) for g in gathered]
            desc_t = [_unpad(g[1], g[3]) for g in gathered]
            labels = [_unpad(g[2], g[3]) for g in gathered]
        if get_rank() == 0:
            self.pgm.generate(desc_s, desc_t, labels)
        if get_world_size() > 1:
            for buf in (self.pgm.proto_s, self.pgm.proto_t, self.pgm.proto_valid,
                        self.pgm.num_generated):
                broadcast(buf, 0)

    @torch.no_grad()
    def _bank_push(self, gs: List[Tensor], gt: List[Tensor], labels: Tensor) -> None:
        """Write this step's GT descriptors into the per-class ring buffers (vectorised).

        Each class's new instances take the next slots of its ring, in order; if a class has
        more than ``bank_size`` new instances in one step only its last ``bank_size`` are kept.
        """
        n = labels.numel()
        if n == 0:
            return
        k, c = self.bank_s.shape[2], self.num_classes
        labels = labels.long()
        counts = torch.bincount(labels, minlength=c)  # (C,)
        order = torch.argsort(labels, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(labels)
        rank[order] = torch.arange(n, device=labels.device) - starts[labels[order]]
        skip = (counts - k).clamp(min=0)[labels]  # older surplus of this step's instances
        keep = rank >= skip
        cls, slot_rank = labels[keep], (rank - skip)[keep]
        for lvl in range(self.num_levels):
            slots = (self.bank_count[lvl, cls] + slot_rank) % k
            self.bank_s[lvl, cls, slots] = gs[lvl][keep].to(self.bank_s)
            self.bank_t[lvl, cls, slots] = gt[lvl][keep].to(self.bank_t)
        self.bank_count += counts.clamp(max=k)[None]

    @torch.no_grad()
    def refresh_from_bank(self) -> None:
        """Generate prototypes from the memory bank (all ranks' banks when distributed)."""
        k = self.bank_s.shape[2]
        desc_s, desc_t, labels = [], [], []
        for lvl in range(self.num_levels):
            n = self.bank_count[lvl].clamp(max=k)  # (C,)
            keep = torch.arange(k, device=n.device)[None, :] < n[:, None]  # (C, K)
            desc_s.append(self.bank_s[lvl][keep])
            desc_t.append(self.bank_t[lvl][keep])
            labels.append(torch.arange(self.num_classes, device=n.device)[:, None]
                          .expand(-1, k)[keep])
        self.generate_prototypes(desc_s, desc_t, labels)

    def _maybe_refresh(self, progress) -> None:
        if self.pgm_cfg['mode'] != 'online' or not self.training:
            return
        interval = self.pgm_cfg['refresh_interval']
        new_epoch = progress.epoch != int(self.last_refresh_epoch) and progress.epoch > 0
        periodic = bool(interval) and progress.iter > 0 and progress.iter % int(interval) == 0
        # The decision depends only on the clock, never on this rank's bank: every rank must
        # enter the collective gather together (a rank-local condition would deadlock DDP).
        if new_epoch or periodic:
            self.refresh_from_bank()
            self.last_refresh_epoch.fill_(progress.epoch)

    # ---- the losses -----------------------------------------------------------------------
    def _instances(self, ctx: DistillContext) -> Tuple[List[Tensor], Tensor, Optional[Tensor]]:
        """Per image (N_i, 4) boxes, (N,) labels and, for positive anchors, (N,) own levels."""
        if self.boxes == 'gt':
            return ctx.gt_bboxes, torch.cat(ctx.gt_labels), None
        if self.boxes == 'pos_rois':
            res = ctx.student_rois.sampling_results
            return [r.pos_priors for r in res], torch.cat([r.pos_gt_labels for r in res]), None
        dense = ctx.student_dense
        boxes, labels, levels = [], [], []
        for i in range(len(ctx.data_samples)):
            per_img = []
            for l in range(len(dense.labels)):
                pos = dense.positives(l, i)
                per_img.append(dense.anchors[i][l][pos])
                labels.append(dense.labels[l][i][pos])
                levels.append(torch.full_like(dense.labels[l][i][pos], l))
            boxes.append(torch.cat(per_img))
        return boxes, torch.cat(labels), torch.cat(levels)

    def descriptors(self, ctx: DistillContext, rois: Tensor) -> Tuple[List[Tensor], List[Tensor]]:
        """Per level, (N, Cs) student (with grad) and (N, Ct) teacher descriptors of ``rois``
        (N, 5), pooled with this module's ``descriptor`` and ``strides``."""
        hw = ctx.batch_input_shape
        gs = box_descriptors(ctx.student_feats, rois, hw, self.descriptor, self.strides)
        with torch.no_grad():
            gt = box_descriptors(ctx.teacher_feats, rois, hw, self.descriptor, self.strides)
        return gs, gt

    def forward(self, ctx: DistillContext) -> Dict[str, Tensor]:
        self._maybe_refresh(ctx.progress)
        boxes, labels, own_levels = self._instances(ctx)
        rois = boxes_to_rois([b.detach().float() for b in boxes]).to(ctx.student_feats[0].device)
        labels = labels.to(rois.device).long()
        gs, gt = self.descriptors(ctx, rois)
        if self.pgm_cfg['mode'] == 'online' and self.training:
            self._push_gt_to_bank(ctx)
        if not self.pgm.ready and not self._warned_not_ready:
            self._warned_not_ready = True
            hint = ('they are generated before each epoch by PGMHook: add '
                    "custom_hooks=[dict(type='PGMHook')] (tools/train.py adds it)"
                    if self.pgm_cfg['mode'] == 'offline' else
                    'the online memory bank fills during the first epoch')
            print_log(f'RobustDistillingModule: no prototypes yet, r = 1 for now; {hint}.',
                      logger='current', level=30)

        # robustness of every instance at every FPN level (detached)
        r_lvls = [robustness(self.pgm, gs[l], gt[l], torch.full_like(labels, l), labels)
                  for l in range(self.num_levels)]
        gamma = self.feat_schedule(ctx.progress)
        out: Dict[str, Tensor] = {}
        box_lvl = own_levels if own_levels is not None else gk_levels(rois[:, 1:],
                                                                      self.num_levels)
        fg, bg = self._imitation(ctx, rois, r_lvls, box_lvl)
        out['fg'] = gamma * self.fg_weight * fg
        out['bg'] = gamma * self.bg_weight * bg
        if self.soft_weight > 0:
            out['soft'] = self.soft_weight * (
                self._soft_label(ctx) if self.two_stage else
                self._soft_label_dense(ctx, r_lvls, own_levels if own_levels is not None
                                       else box_lvl))
        if self.relation_weight > 0:
            out['rel'] = gamma * self.relation_weight * self._relation(gs, gt, r_lvls)
        if rois.shape[0]:
            MessageHub.get_current_instance().update_scalar(
                'train/gk_r_mean', float(torch.stack(r_lvls).mean()))
        return {k: require_finite(v, f'RobustDistillingModule {k}') for k, v in out.items()}

    @staticmethod
    def paint_masks(rois: Tensor, r_lvls: List[Tensor], box_lvl: Tensor,
                    feat_shapes: Sequence[Tuple[int, int]], batch_size: int,
                    input_hw: Tuple[int, int], painting: str = 'int_overwrite',
                    strides: Optional[Sequence[float]] = None) -> List[Tensor]:
        """Per level, the (B, H_l, W_l) foreground mask: each box paints its robustness at its
        own level ``box_lvl``, by the ``painting`` rule (see ``mask_painting``), in the order
        of ``rois``.

        Args:
            rois: (N, 5) ``[batch_idx, x1, y1, x2, y2]``; r_lvls: L tensors (N,);
            box_lvl: (N,) mask level of each box; feat_shapes: L (H_l, W_l);
            input_hw: padded batch input size; strides: per-level strides or None (inferred).
        """
        check_choice('mask_painting', painting, MASK_PAINTINGS)
        strides_yx = level_strides(feat_shapes, input_hw, strides)
        paint = paint_box_mask_overwrite if painting == 'int_overwrite' else paint_box_mask
        masks = []
        for l, (hl, wl) in enumerate(feat_shapes):
            per_img = []
            for i in range(batch_size):
                sel = (rois[:, 0] == i) & (box_lvl == l)
                per_img.append(paint(rois[sel, 1:], (hl, wl), strides_yx[l],
                                     values=r_lvls[l][sel]))
            masks.append(torch.stack(per_img))
        return masks

    def split_masks(self, mask: Tensor) -> Tuple[Tensor, Tensor]:
        """The (fg, bg) weights of one painted mask under ``negative_r``.

        ``'keep'``: fg = M (negative where r < 0), bg = 0 where M > 0 and ``1 - M`` elsewhere
        (1 off the boxes, ``1 - r`` under a box with r < 0). ``'clamp'``: fg = max(M, 0),
        bg = [M <= 0].
        """
        if self.negative_r == 'keep':
            return mask, torch.where(mask > 0, torch.zeros_like(mask), 1.0 - mask)
        return mask.clamp(min=0), (mask <= 0).to(mask)

    def _imitation(self, ctx: DistillContext, rois: Tensor, r_lvls: List[Tensor],
                   box_lvl: Tensor) -> Tuple[Tensor, Tensor]:
        """Decoupled FPN imitation: the fg and bg terms reduced over levels (unweighted)."""
        masks = self.paint_masks(rois, r_lvls, box_lvl,
                                 [f.shape[-2:] for f in ctx.student_feats],
                                 ctx.student_feats[0].shape[0], ctx.batch_input_shape,
                                 self.mask_painting, self.strides)
        fg_terms, bg_terms = [], []
        for l, (s, t) in enumerate(zip(ctx.student_feats, ctx.teacher_feats)):
            a = self.adapters[l](s)
            diff = a - align_teacher_feat(a, t, l)
            fg_mask, bg_mask = self.split_masks(masks[l])
            fg_terms.append(gk_masked_error(diff, fg_mask))
            bg_terms.append(gk_masked_error(diff, bg_mask))
        reduce = torch.mean if self.level_reduction == 'mean' else torch.sum
        return reduce(torch.stack(fg_terms)), reduce(torch.stack(bg_terms))

    @torch.no_grad()
    def inspect(self, ctx: DistillContext, boxes: List[Tensor], labels: Tensor) -> dict:
        """What the module decides for given boxes (for tools/visualize_pgm.py).

        Returns a dict with ``rois`` (N, 5), ``level`` (N,) the mask level of each box
        (the two-stage rule), ``r`` (N,) its robustness at that level, ``r_levels`` (L, N) its
        robustness at every level, ``desc_s`` (L, N, Cs) and ``desc_t`` (L, N, Ct) its
        descriptors, and ``masks``: per level the (B, H_l, W_l) robustness-painted foreground
        mask used by the imitation loss (before ``negative_r`` is applied).
        """
        rois = boxes_to_rois([b.float() for b in boxes]).to(ctx.student_feats[0].device)
        labels = labels.to(rois.device).long()
        gs, gt = self.descriptors(ctx, rois)
        r_lvls = [robustness(self.pgm, gs[l], gt[l], torch.full_like(labels, l), labels)
                  for l in range(self.num_levels)]
        lvl = gk_levels(rois[:, 1:], self.num_levels)
        masks = self.paint_masks(rois, r_lvls, lvl, [f.shape[-2:] for f in ctx.student_feats],
                                 ctx.student_feats[0].shape[0], ctx.batch_input_shape,
                                 self.mask_painting, self.strides)
        r = torch.stack(r_lvls)[lvl, torch.arange(len(lvl), device=lvl.device)]
        return dict(rois=rois, level=lvl, r=r, r_levels=torch.stack(r_lvls),
                    desc_s=torch.stack(gs), desc_t=torch.stack(gt), masks=masks)

    def _soft_label(self, ctx: DistillContext) -> Tensor:
        """r-weighted KL of the R-CNN class distributions on the student's positive RoIs."""
        rec = ctx.student_rois
        idx = rec.pos_index
        if idx.numel() == 0:
            return rec.cls_score.sum() * 0.0
        rois = rec.rois[idx]
        t_out = ctx.teacher_roi_forward(rois)
        roi_lvl = ctx.student.roi_head.bbox_roi_extractor.map_roi_levels(
            rois, len(self.roi_strides))
        r = robustness(self.pgm, rec.bbox_feats[idx].mean((2, 3)),
                       t_out['bbox_feats'].mean((2, 3)), roi_lvl, rec.pos_labels)
        return soft_label_kl(rec.cls_score[idx], t_out['cls_score'], self.temperature,
                             'classmean', weight=r)

    def _soft_label_dense(self, ctx: DistillContext, r_lvls: List[Tensor],
                          own_levels: Tensor) -> Tensor:
        """r-weighted softmax KL over the classes of the positive anchors' logits (one-stage).

        The rows follow the instance order of :meth:`_instances` (image, then level), so each
        logit row gets the robustness of its own anchor at its own level."""
        dense = ctx.student_dense
        c = dense.num_classes
        t_cls = ctx.teacher_head_outs[0]
        s_rows, t_rows = [], []
        dense.check_same_anchors(dense.cls_scores, t_cls, 'the Global-Knowledge soft label')
        s_flat = [dense.flat_logits(x, c) for x in dense.cls_scores]
        t_flat = [dense.flat_logits(x, c) for x in t_cls]
        for i in range(len(ctx.data_samples)):
            for l in range(len(dense.labels)):
                pos = dense.positives(l, i)
                s_rows.append(s_flat[l][i][pos])
                t_rows.append(t_flat[l][i][pos])
        s_logits, t_logits = torch.cat(s_rows), torch.cat(t_rows)
        if s_logits.shape[0] == 0:
            return dense.cls_scores[0].sum() * 0.0
        idx = torch.arange(s_logits.shape[0], device=s_logits.device)
        r = torch.stack(r_lvls)[own_levels, idx]
        return soft_label_kl(s_logits, t_logits, self.temperature, 'classmean', weight=r)

    def _relation(self, gs: List[Tensor], gt: List[Tensor], r_lvls: List[Tensor]) -> Tensor:
        """Sum over levels of SmoothL1(r * sim(g_s, all P_s), r * sim(g_t, all P_t))."""
        total = gs[0].sum() * 0.0
        if not self.pgm.ready:
            return total
        for l in range(self.num_levels):
            if gs[l].shape[0] == 0 or not bool(self.pgm.proto_valid[l].any()):
                continue
            us = self.pgm.all_similarity(gs[l], l, 's')
            with torch.no_grad():
                ut = self.pgm.all_similarity(gt[l], l, 't')
            r = r_lvls[l][:, None]
            total = total + F.smooth_l1_loss(r * us, r * ut)
        return total

    @torch.no_grad()
    def _push_gt_to_bank(self, ctx: DistillContext) -> None:
        boxes = []
        labels = []
        min_size = float(self.pgm_cfg['min_size'])
        for b, lab in zip(ctx.gt_bboxes, ctx.gt_labels):
            ok = ((b[:, 2] - b[:, 0]) > min_size) & ((b[:, 3] - b[:, 1]) > min_size)
            boxes.append(b[ok].float())
            labels.append(lab[ok])
        rois = boxes_to_rois(boxes).to(ctx.student_feats[0].device)
        if rois.shape[0] == 0:
            return
        gs, gt = self.descriptors(ctx, rois)
        self._bank_push([g.detach() for g in gs], gt, torch.cat(labels).to(rois.device).long())


def _pad_for_gather(parts: Tuple[Tensor, Tensor, Tensor]) -> List[Tensor]:
    """all_gather needs equal shapes: pad (N, D) chunks to the largest N over ranks."""
    n = torch.tensor([parts[0].shape[0]], device=parts[0].device)
    n_max = int(torch.cat(all_gather(n)).max())
    out = []
    for x in parts:
        pad = x.new_zeros((n_max - x.shape[0], ) + tuple(x.shape[1:]))
        out.append(torch.cat([x, pad]))
    out.append(n.expand(n_max).clone())  # each row carries its rank's true count
    return out


def _unpad(x: Tensor, counts: Tensor) -> Tensor:
    """Undo :func:`_pad_for_gather` on the concatenated gather of all ranks."""
    world = get_world_size()
    n_max = x.shape[0] // world
    if n_max == 0:
        return x
    parts = [x[i * n_max:i * n_max + int(counts[i * n_max])] for i in range(world)]
    return torch.cat(parts)
