"""Each distillation method as a preset that applies to any teacher/student pair.

A method's settings live once, in its config fragment (``configs/_base_/methods/*.py``,
``configs/_base_/gk_released.py``, ``configs/_base_/icd_runtime.py``): the released loss
weights, the hooks and the optimiser it needs. The shipped COCO and synthetic configs inherit
those fragments; a preset reads the same fragment and adds what depends on the pair, read from
the *built* models:

* the one- or two-stage variant (e.g. PKD's Faster R-CNN or RetinaNet weights, GK's boxes);
* channel adapters where the student's FPN is narrower than the teacher's (and only there);
* the student's anchor strides, the classifier teacher's crop size;
* a student widened to the teacher's FPN width where a method compares features without an
  adapter (DSIG), together with the plain baseline of that width;
* the teacher-initialised start of the recipes that have one, where the shapes allow it.

``tuning`` holds what a data set needs (the built-in data's small objects:
``synthetic_tuning`` in ``configs/_base_/synthetic_distill.py``, which the synthetic configs use
too). A preset that cannot apply to a pair raises :class:`Skip` with the reason.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config
from torch import nn

from ..utils.paths import REPO_ROOT

#: Fragment files, relative to the checkout.
FRAGMENTS = {
    'feat_kl': 'configs/_base_/methods/feat_kl.py',
    'gk': 'configs/_base_/gk_released.py',
    'icd': 'configs/_base_/icd_runtime.py',
    'dsig': 'configs/_base_/methods/dsig.py',
    'gid': 'configs/_base_/methods/gid.py',
    'dicod': 'configs/_base_/methods/dicod.py',
    'peer': 'configs/_base_/methods/peer_losses.py',
    'runtime': 'configs/_base_/distill_runtime.py',
}
#: The built-in data's tuning (one definition, used by the synthetic configs as well).
SYNTHETIC_TUNING_FILE = 'configs/_base_/synthetic_distill.py'
#: Student modules a teacher-initialised start may copy, in this order.
INHERITABLE = ('neck', 'rpn_head', 'roi_head', 'bbox_head', 'mask_head')

_FRAGMENT_CACHE: Dict[str, Config] = {}


def fragment(key: str) -> Config:
    """The parsed fragment ``FRAGMENTS[key]`` (parsed once per process)."""
    if key not in _FRAGMENT_CACHE:
        import os.path as osp
        _FRAGMENT_CACHE[key] = Config.fromfile(osp.join(REPO_ROOT, FRAGMENTS[key]))
    return _FRAGMENT_CACHE[key]


def synthetic_tuning() -> Dict[str, dict]:
    """``synthetic_tuning`` of ``configs/_base_/synthetic_distill.py`` as plain dicts."""
    import os.path as osp
    cfg = Config.fromfile(osp.join(REPO_ROOT, SYNTHETIC_TUNING_FILE))
    return copy.deepcopy(cfg.synthetic_tuning.to_dict())


def plain(obj: Any) -> Any:
    """ConfigDicts (and lists of them) as plain, deep-copied python containers."""
    if hasattr(obj, 'to_dict'):
        return copy.deepcopy(obj.to_dict())
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    return copy.deepcopy(obj)


class Skip(Exception):
    """A method that cannot apply to the pair; ``str()`` is the reason shown to the user."""


# ---- what the built models say -----------------------------------------------------------------
def _strides(gen) -> Optional[List[int]]:
    strides = getattr(gen, 'strides', None)
    if strides is None:
        return None
    return [int(s[0] if isinstance(s, (tuple, list)) else s) for s in strides]


def _level_strides(model: nn.Module) -> Optional[List[int]]:
    """Strides of the FPN levels, from the RPN / dense head's prior generator."""
    for head in (getattr(model, 'rpn_head', None), getattr(model, 'bbox_head', None)):
        s = _strides(getattr(head, 'prior_generator', None))
        if s:
            return s
    return None


def _neck_levels(model: nn.Module) -> Optional[int]:
    n = getattr(getattr(model, 'neck', None), 'num_outs', None)
    return int(n) if n is not None else None


@dataclass
class PairInfo:
    """What a preset needs to know about the teacher/student pair, read from built models."""
    student_type: str
    teacher_type: str
    student_two_stage: bool
    teacher_two_stage: bool
    teacher_is_classifier: bool
    student_channels: Optional[int]
    teacher_channels: Optional[int]
    student_levels: Optional[int]
    teacher_levels: Optional[int]
    student_strides: Optional[List[int]]
    teacher_strides: Optional[List[int]]
    student_head: str
    student_anchor_head: bool
    student_num_classes: Optional[int]
    teacher_num_classes: Optional[int]

    @classmethod
    def from_models(cls, student: nn.Module, teacher: nn.Module) -> 'PairInfo':
        from mmdet.models.dense_heads import AnchorHead

        from ..models.detectors.distill_detector import num_classes_of
        from ..models.losses.feature_imitation import neck_channels
        from ..models.methods.dicod import CropClassifier
        two = bool(getattr(student, 'with_roi_head', False))
        head = (getattr(getattr(student, 'roi_head', None), 'bbox_head', None) if two
                else getattr(student, 'bbox_head', None))
        dense = getattr(student, 'bbox_head', None)
        cs = neck_channels(student)
        ct = neck_channels(teacher)
        return cls(
            student_type=type(student).__name__, teacher_type=type(teacher).__name__,
            student_two_stage=two,
            teacher_two_stage=bool(getattr(teacher, 'with_roi_head', False)),
            teacher_is_classifier=isinstance(teacher, CropClassifier),
            student_channels=cs if isinstance(cs, int) else None,
            teacher_channels=ct if isinstance(ct, int) else None,
            student_levels=_neck_levels(student), teacher_levels=_neck_levels(teacher),
            student_strides=_level_strides(student), teacher_strides=_level_strides(teacher),
            student_head=type(head).__name__ if head is not None else 'none',
            student_anchor_head=isinstance(dense, AnchorHead),
            student_num_classes=num_classes_of(student),
            teacher_num_classes=num_classes_of(teacher))

    @property
    def kind(self) -> str:
        return 'two-stage' if self.student_two_stage else 'one-stage'

    @property
    def widths_differ(self) -> bool:
        return (self.student_channels is not None and self.teacher_channels is not None
                and self.student_channels != self.teacher_channels)


# ---- the result of applying a preset -----------------------------------------------------------
@dataclass
class MethodPlan:
    """A preset applied to one pair: everything the benchmark puts into the run's config."""
    name: str
    label: str
    distill_losses: Dict[str, dict]
    #: extra DistillDetector arguments (``init_student_from_teacher``)
    model_extra: Dict[str, Any] = field(default_factory=dict)
    #: the student model dict when the method changes the student (DSIG's widened FPN)
    student: Optional[dict] = None
    #: name of the plain baseline of that student (e.g. ``student_n128``), else ``student``
    baseline: str = 'student'
    baseline_label: str = ''
    #: the full ``custom_hooks`` list, None for mmkd's default distillation hooks
    custom_hooks: Optional[List[dict]] = None
    #: top-level config entries (optim_wrapper, param_scheduler, model_wrapper_cfg)
    cfg_extra: Dict[str, Any] = field(default_factory=dict)
    #: 'detector' (the detector teacher) or 'classifier' (DICOD's crop classifier)
    teacher: str = 'detector'
    notes: List[str] = field(default_factory=list)


@dataclass
class PresetContext:
    """Inputs of :meth:`MethodPreset.apply`.

    Attributes:
        pair: the pair, read from the built models.
        student / teacher: the built models (losses are set up against them to check that
            they apply); ``teacher`` is the classifier for a classifier-teacher method.
        student_model: the student's model dict (a widened copy is made from it).
        base_cfg: the plain student run's config (its optim_wrapper / param_scheduler).
        protocol: ``'scratch'`` or ``'finetune'``.
        tuning: per-method data-set tuning (``synthetic_tuning``), ``{}`` for none.
        cls_crop_size: the classifier teacher's ``crop_cfg.crop_size`` when there is one.
        total_iters: training iterations of a run (for warnings about too-long warm-ups).
        build_student: builds a student from a model dict (for the widened student's checks).
    """
    pair: PairInfo
    student: nn.Module
    teacher: Optional[nn.Module]
    student_model: dict
    base_cfg: Config
    protocol: str = 'scratch'
    tuning: Dict[str, dict] = field(default_factory=dict)
    cls_crop_size: Optional[int] = None
    total_iters: Optional[int] = None
    build_student: Optional[Callable[[dict], nn.Module]] = None


def compatible_modules(student: nn.Module, teacher: nn.Module,
                       names: Sequence[str]) -> Tuple[List[str], str]:
    """The ``names`` present in both models with identical tensors (keys and shapes), and the
    reason the others are not (empty when all are)."""
    ok, why = [], []
    for n in names:
        s, t = getattr(student, n, None), getattr(teacher, n, None)
        if s is None or t is None:
            continue
        ss, ts = s.state_dict(), t.state_dict()
        if ss.keys() == ts.keys() and all(ss[k].shape == ts[k].shape for k in ss):
            ok.append(n)
        else:
            why.append(n)
    return ok, (f'{", ".join(why)} differ in shape' if why else '')


def widen_student(model: dict, channels: int, two_stage: bool) -> dict:
    """The student model dict with its FPN and the heads reading it widened to ``channels``
    (as ``configs/synthetic/faster_rcnn_r18w16n128_fpn_12e_synthetic.py`` does)."""
    m = copy.deepcopy(model)
    m['neck']['out_channels'] = channels
    if two_stage:
        m['rpn_head'].update(in_channels=channels, feat_channels=channels)
        m['roi_head']['bbox_roi_extractor']['out_channels'] = channels
        m['roi_head']['bbox_head']['in_channels'] = channels
    else:
        m['bbox_head']['in_channels'] = channels
        if 'feat_channels' in m['bbox_head']:
            m['bbox_head']['feat_channels'] = channels
    return m


# ---- presets -----------------------------------------------------------------------------------
class MethodPreset:
    """A method's settings, applied to a pair by :meth:`apply`."""
    name: str = ''
    label: str = ''
    #: 'detector' or 'classifier'
    teacher: str = 'detector'
    #: compares FPN levels of student and teacher one to one
    paired_levels: bool = True

    def apply(self, ctx: PresetContext) -> MethodPlan:
        """The method's plan for the pair; raises :class:`Skip` when it cannot apply."""
        if self.teacher == 'detector':
            self._check_detector_pair(ctx.pair)
        plan = self.make(ctx)
        check_losses(plan, ctx)
        return plan

    def make(self, ctx: PresetContext) -> MethodPlan:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_detector_pair(self, p: PairInfo) -> None:
        if p.teacher_is_classifier:
            raise Skip('its teacher is a detector; the given teacher is an image classifier')
        if p.student_channels is None or p.teacher_channels is None:
            raise Skip('it distils FPN features; student or teacher has no neck with a single '
                       f'out_channels (student {p.student_type}, teacher {p.teacher_type})')
        if self.paired_levels and p.student_levels != p.teacher_levels:
            raise Skip(f'it pairs FPN levels one to one; the student has {p.student_levels} '
                       f'levels and the teacher {p.teacher_levels}')
        if self.paired_levels and p.student_strides and p.teacher_strides and \
                p.student_strides != p.teacher_strides:
            raise Skip(f'it pairs FPN levels one to one; the student\'s levels are at strides '
                       f'{p.student_strides}, the teacher\'s at {p.teacher_strides}')

    @staticmethod
    def inherit(ctx: PresetContext, plan: MethodPlan, names: Sequence[str], why: str) -> None:
        """Add the teacher-initialised start for ``names`` where the shapes allow it and the
        protocol starts from the student's own weights."""
        if ctx.protocol == 'finetune':
            plan.notes.append(f'{why} omitted: the finetune protocol starts from the converged '
                              'student')
            return
        ok, bad = compatible_modules(ctx.student, ctx.teacher, names)
        if bad:
            plan.notes.append(f'{why} omitted: {bad} between student and teacher')
        elif ok:
            plan.model_extra['init_student_from_teacher'] = ok


class FeatKLPreset(MethodPreset):
    name = 'feat_kl'
    label = 'FPN feature imitation + RoI KL (foundation losses)'

    def make(self, ctx: PresetContext) -> MethodPlan:
        f, p = fragment('feat_kl'), ctx.pair
        fpn = plain(f.feat_kl_fpn)
        plan = MethodPlan(self.name, self.label, {'loss_kd_fpn': fpn})
        if p.widths_differ:
            fpn['adapter'] = 'conv1x1'
        if p.student_two_stage and p.teacher_two_stage:
            plan.distill_losses['loss_kd_roi_kl'] = plain(f.feat_kl_roi)
        else:
            plan.notes.append('FPN imitation only: the RoI KL needs R-CNN heads on both sides')
        return plan


class GKPreset(MethodPreset):
    name = 'pgm'
    mode = 'offline'
    label = 'PGM + RDM, offline PGM (extra pass before each epoch)'

    def make(self, ctx: PresetContext) -> MethodPlan:
        f, p = fragment('gk'), ctx.pair
        if not p.student_two_stage and not p.student_anchor_head:
            raise Skip(f'its one-stage variant needs an anchor-based dense head (positive '
                       f'anchors); the student has {p.student_head}')
        if not p.student_strides:
            raise Skip('it needs the student\'s anchor strides (an RPN or dense head with a '
                       'prior generator)')
        pgm = dict(plain(f.gk_pgm), mode=self.mode, **ctx.tuning.get('pgm', {}))
        loss = dict(plain(f.gk_loss), boxes='pos_rois' if p.student_two_stage else 'auto',
                    strides=list(p.student_strides), pgm=pgm)
        hooks = plain(fragment('runtime').custom_hooks) + plain(f.gk_hooks)
        for h in hooks:
            if h['type'] == 'PGMHook':
                h.update(ctx.tuning.get('pgm_hook', {}))
        return MethodPlan(self.name, self.label, {'loss_gk': loss}, custom_hooks=hooks)


class GKOnlinePreset(GKPreset):
    name = 'pgm_online'
    mode = 'online'
    label = 'PGM + RDM, online PGM (memory bank)'


class ICDPreset(MethodPreset):
    name = 'icd'
    label = 'ICD'
    paired_levels = False  # the decoder attends over all teacher levels

    def make(self, ctx: PresetContext) -> MethodPlan:
        f, p = fragment('icd'), ctx.pair
        variant = f.icd_two_stage if p.student_two_stage else f.icd_one_stage
        loss = dict(dict(plain(f.icd_loss), **plain(variant)), **ctx.tuning.get('icd', {}))
        base = ctx.base_cfg
        plan = MethodPlan(self.name, self.label, {'loss_icd': loss}, cfg_extra=dict(
            optim_wrapper=dict(constructor='DistillOptimWrapperConstructor',
                               student=dict(plain(base.optim_wrapper),
                                            clip_grad=plain(f.icd_student_clip_grad)),
                               distill=plain(f.icd_distill_optim)),
            param_scheduler=dict(student=plain(base.param_scheduler),
                                 distill=plain(f.icd_distill_schedule_12e)),
            model_wrapper_cfg=plain(f.model_wrapper_cfg)))
        self.inherit(ctx, plan, INHERITABLE, 'the teacher-initialised neck and heads')
        if ctx.total_iters and loss.get('bypass_iters', 0) >= ctx.total_iters:
            plan.notes.append(
                f'warning: ICD distils only after bypass_iters={loss["bypass_iters"]} '
                f'iterations and a run has {ctx.total_iters}; it will not distil. Lower it: '
                '--cfg-options icd:model.distill_losses.loss_icd.bypass_iters=N')
        return plan


class DSIGPreset(MethodPreset):
    name = 'dsig'
    label = 'DSIG'

    def make(self, ctx: PresetContext) -> MethodPlan:
        f, p = fragment('dsig'), ctx.pair
        loss = plain(f.dsig_loss)
        if not p.student_two_stage:
            from mmdet.models.dense_heads import SSDHead
            head = getattr(ctx.student, 'bbox_head', None)
            if not p.student_anchor_head or isinstance(head, SSDHead):
                raise Skip('its one-stage graph is built on the student\'s post-NMS detections '
                           'of an anchor head with one FPN width (RetinaNet-like); the student '
                           f'has {p.student_head}')
            loss.update(plain(f.dsig_one_stage_nodes))
        plan = MethodPlan(self.name, self.label, {'loss_dsig': loss})
        if p.widths_differ:
            c = p.teacher_channels
            plan.student = widen_student(ctx.student_model, c, p.student_two_stage)
            plan.baseline = f'student_n{c}'
            plan.baseline_label = (f'plain student with DSIG\'s {c}-ch neck and heads (no '
                                   'distillation)')
            plan.label = f'DSIG (student neck widened to {c} ch)'
            plan.notes.append(f'DSIG compares FPN features without an adapter: the student\'s '
                              f'neck and heads are widened from {p.student_channels} to {c} '
                              f'channels, and the plain {plan.baseline} is its baseline')
        return plan


class GIDPreset(MethodPreset):
    name = 'gid'
    label = 'GID'

    def make(self, ctx: PresetContext) -> MethodPlan:
        f, p = fragment('gid'), ctx.pair
        loss = plain(f.gid_released)
        if p.widths_differ:
            loss['adapter'] = 'conv3x3'
        loss.update(ctx.tuning.get('gid', {}))
        plan = MethodPlan(self.name, self.label, {'loss_gid': loss})
        if p.student_two_stage:
            plan.notes.append('two-stage variant (mmkd\'s design: the student\'s sampled RoIs '
                              'as candidates)')
        return plan


class DICODPreset(MethodPreset):
    name = 'dicod'
    label = 'DICOD (teacher: crop classifier)'
    teacher = 'classifier'
    paired_levels = False

    def make(self, ctx: PresetContext) -> MethodPlan:
        if ctx.teacher is None or not ctx.pair.teacher_is_classifier:
            raise Skip('DICOD distils from an image classifier trained on object crops, and '
                       'none is given: add --cls-teacher CONFIG (e.g. '
                       'configs/synthetic/cls_teacher_r18w16_synthetic.py, retargeted to your '
                       'classes and trained here) or --cls-teacher-ckpt')
        loss = dict(plain(fragment('dicod').dicod_released), crop_size=int(ctx.cls_crop_size))
        return MethodPlan(self.name, self.label, {'loss_dicod': loss}, teacher='classifier')


class PeerPreset(MethodPreset):
    """PKD, CWD, FGD, MGD: ``<name>_faster_rcnn`` for two-stage students, ``<name>_retinanet``
    for one-stage ones (configs/_base_/methods/peer_losses.py)."""
    adapter = False  # pairs channels one to one: a 1x1 adapter where widths differ
    clip = False  # the official recipe clips gradients (fgd_mgd_clip_grad)
    teacher_init = False  # the official RetinaNet recipe starts neck and head from the teacher

    def make(self, ctx: PresetContext) -> MethodPlan:
        f, p = fragment('peer'), ctx.pair
        variant = 'faster_rcnn' if p.student_two_stage else 'retinanet'
        loss = plain(f[f'{self.name}_{variant}'])
        if self.adapter and p.widths_differ:
            loss['adapter'] = 'conv1x1'
        plan = MethodPlan(self.name, self.label, {f'loss_{self.name}': loss})
        if not p.student_two_stage:
            plan.notes.append('one-stage student: the RetinaNet settings')
        if self.clip:
            plan.cfg_extra['optim_wrapper'] = dict(plain(ctx.base_cfg.optim_wrapper),
                                                   clip_grad=plain(f.fgd_mgd_clip_grad))
        if self.teacher_init and not p.student_two_stage:
            self.inherit(ctx, plan, f.retinanet_teacher_init,
                         'the teacher-initialised neck and head')
        return plan


class PKDPreset(PeerPreset):
    name, label, adapter = 'pkd', 'PKD', True


class CWDPreset(PeerPreset):
    name, label, adapter = 'cwd', 'CWD', True


class FGDPreset(PeerPreset):
    name, label, clip, teacher_init = 'fgd', 'FGD', True, True


class MGDPreset(PeerPreset):
    name, label, clip, teacher_init = 'mgd', 'MGD', True, True


#: Every method preset, by name, in report order.
METHOD_PRESETS: Dict[str, MethodPreset] = {p.name: p for p in (
    FeatKLPreset(), GKPreset(), GKOnlinePreset(), ICDPreset(), DSIGPreset(), GIDPreset(),
    DICODPreset(), PKDPreset(), CWDPreset(), FGDPreset(), MGDPreset())}

#: Suffix of a method run with ``model.auto_balance=True``.
AB_SUFFIX = '+ab'


def base_method(name: str) -> str:
    """``'pgm+ab'`` -> ``'pgm'``."""
    return name[:-len(AB_SUFFIX)] if name.endswith(AB_SUFFIX) else name


def check_losses(plan: MethodPlan, ctx: PresetContext) -> None:
    """Build the plan's losses and set them up against the built models (the checks the
    DistillDetector would run at build time); raises :class:`Skip` with the loss's own message
    when one refuses the pair."""
    from mmdet.registry import MODELS
    student = ctx.student
    if plan.student is not None:
        if ctx.build_student is None:
            raise Skip('it changes the student, which cannot be built here')
        student = ctx.build_student(plan.student)
    for key, cfg in plan.distill_losses.items():
        try:
            from mmengine.config import ConfigDict
            loss = MODELS.build(ConfigDict(copy.deepcopy(cfg)))
            loss.setup(student, ctx.teacher)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise Skip(f'{key} ({cfg.get("type")}) does not apply to this pair: {exc}') from None
