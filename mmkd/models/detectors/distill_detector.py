"""DistillDetector: a student detector trained with a frozen teacher's knowledge."""
from __future__ import annotations

import copy
import re
from contextlib import ExitStack
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from mmdet.models.detectors.base import BaseDetector
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.structures.bbox import bbox2roi, get_box_tensor
from mmengine.config import ConfigDict
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper, OptimWrapperDict
from torch import Tensor, nn

from ...utils.checkpoint import load_strict
from ...utils.config import ModelSpec, load_model_cfg, unknown_option_error
from ..distill_context import DistillContext, StudentDenseTargets, StudentRoIs
from ..losses.base import BaseDistillLoss
from ..utils.dense_head_compat import add_missing_loss_cls
from ..utils.init_from_teacher import ModuleMapSpec, copy_teacher_modules, resolve_module_map
from ..utils.loss_balance import LossBalancer, term_key
from ..utils.progress import TrainProgress
from ..utils.recorder import MethodRecorder
from ..utils.teacher_inputs import TeacherInputAdapter


def num_classes_of(model: nn.Module) -> Optional[int]:
    """The class count of a built detector (or classifier), or None if it cannot be read."""
    roi_head = getattr(model, 'roi_head', None)
    heads = [getattr(roi_head, 'bbox_head', None), getattr(model, 'bbox_head', None),
             getattr(model, 'mask_head', None), getattr(model, 'head', None)]
    for head in heads:
        if isinstance(head, nn.ModuleList):  # cascade: the last stage
            head = head[-1]
        n = getattr(head, 'num_classes', None)
        if n is not None:
            return int(n)
    return None


def loss_name_for(type_name: str) -> str:
    """Log name of a loss given as a list item: ``'RoIClsKLLoss'`` -> ``'loss_roi_cls_kl'``."""
    name = type_name.split('.')[-1].replace('RoI', 'Roi')
    snake = re.sub(r'(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])', '_', name).lower()
    return 'loss_' + re.sub(r'_?loss$', '', snake)


def freeze(model: nn.Module) -> nn.Module:
    """Switch every parameter off for gradients and put every module in eval mode."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


@MODELS.register_module()
class DistillDetector(BaseDetector):
    """Train ``student`` with distillation losses computed against a frozen ``teacher``.

    * Both models are built from a ``mmdet::`` config path, a local config path, or a model
      dict (see :func:`mmkd.utils.config.load_model_cfg`).
    * The teacher is loaded strictly from ``teacher_ckpt`` at build time, frozen, kept in
      ``eval()`` whatever ``train()`` is called, runs under ``no_grad`` and never computes its
      own detection loss. It runs backbone + neck; its heads run only when a loss asks.
    * The teacher is held outside the module tree: it is not in ``state_dict()``,
      ``parameters()`` or checkpoints, and the optimizer and DDP never see it. Device and dtype
      moves (``to``, ``cuda``, ``half``...) still reach it through :meth:`_apply`.
    * Checkpoints hold ``student.*`` (the student, loadable by plain mmdet after export) and
      ``distill_losses.*`` (adapters, prototype buffers) for resume.
    * ``predict`` and ``tensor`` modes are the student's.

    Args:
        student: student model spec.
        teacher: teacher model spec.
        teacher_ckpt: teacher checkpoint (local path, path relative to the mmkd checkout, or
            URL). ``None`` leaves the teacher randomly initialised and logs a warning: only for
            smoke tests.
        student_ckpt: optional checkpoint loaded strictly into the student at build time (e.g.
            a converged student, as the Global-Knowledge paper starts from); the student's own
            ``init_cfg`` is then skipped. ``load_from`` would not work here: its keys lack the
            ``student.`` prefix and mmengine loads it non-strictly.
        init_student_from_teacher: student modules that start as copies of teacher modules
            ("inheriting", as the ICD, FGD and MGD releases do for the neck and heads): a list
            of module names present in both models (``['neck', 'bbox_head']``) or a dict from
            student to teacher module names (dotted paths). Each pair must match tensor for
            tensor (strict shapes, all or nothing, checked at build time); the copy is logged,
            applied after ``student_ckpt``, and kept through ``init_weights``
            (``load_from``/``--resume`` still override it). None copies nothing.
        distill_losses: ``{name: loss_cfg}`` (names start with ``loss_``) or a list of loss
            configs (named ``loss_<snake_case_type>``).
        min_gt_wh: GT boxes narrower or shorter than this (input pixels), or with non-finite
            coordinates, are dropped before any loss, with a warning: mmdet's box coder turns a
            zero-size GT into a NaN regression target that would ruin the run. (Better: add
            ``dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1))`` to the train pipeline.)
        teacher_preprocess: ``'auto'``: convert the batch to the teacher's own normalisation and
            padding when its data_preprocessor differs from the student's (logged);
            ``'same'``: give the teacher the student's batch unchanged.
        balance_report: log each distillation term's ratio to the student's detection loss
            over the first iterations, warn once (with a suggested ``loss_weight``) for a term
            above ``warn_ratio``, and write ``<work_dir>/loss_balance.json`` at the end
            (:class:`~mmkd.models.utils.LossBalancer`). True (defaults
            ``dict(iters=20, warn_ratio=1.0, final_iters=20)``), a dict of those keys, or False.
            Measurement only: the losses are unchanged.
        auto_balance: over the first ``iters`` active iterations of each term, measure it
            (passing no gradient), then fix its weight once so it starts at ``target_ratio`` x
            the detection loss. False (default, and in every paper config), True (defaults
            ``dict(iters=<balance_report iters>, target_ratio=0.5, only_decrease=True)``) or a
            dict of those keys plus ``terms={loss name or key: False | dict(enabled=...,
            target_ratio=..., only_decrease=...)}``. The chosen scales are logged, kept in
            checkpoints and restored by ``--resume``. See docs/loss_balance.md.
        data_preprocessor: defaults to the student's.
        init_cfg: mmengine init config.
    """

    def __init__(self, student: ModelSpec, teacher: ModelSpec,
                 teacher_ckpt: Optional[str] = None,
                 student_ckpt: Optional[str] = None,
                 init_student_from_teacher: ModuleMapSpec = None,
                 distill_losses: Union[Dict[str, dict], Sequence[dict], None] = None,
                 min_gt_wh: float = 1.0,
                 teacher_preprocess: str = 'auto',
                 balance_report: Union[bool, dict] = True,
                 auto_balance: Union[bool, dict] = False,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        from mmdet.utils import register_all_modules
        from mmengine.registry import DefaultScope

        # Register mmdet's modules; set the default scope only if nobody did (keep mmyolo's...).
        register_all_modules(init_default_scope=DefaultScope.get_current_instance() is None)
        student_cfg = load_model_cfg(student, 'student')
        teacher_cfg = load_model_cfg(teacher, 'teacher')
        dp_cfg = data_preprocessor or copy.deepcopy(student_cfg.get('data_preprocessor'))
        super().__init__(data_preprocessor=dp_cfg, init_cfg=init_cfg)

        self.student = MODELS.build(student_cfg)
        add_missing_loss_cls(self.student)  # SSD heads predict under mmdet 3.3 (#11780)
        self.student_ckpt_meta: dict = {}
        self.teacher_ckpt_meta: dict = {}
        if student_ckpt is not None:
            self.student_ckpt_meta = load_strict(self.student, student_ckpt, role='student')
            self.student._is_init = True  # keep these weights when the runner initialises
            print_log(f'DistillDetector: student starts from {student_ckpt} (strict load)',
                      logger='current')
        teacher_model = MODELS.build(teacher_cfg)
        add_missing_loss_cls(teacher_model)
        if teacher_ckpt is None:
            print_log('DistillDetector: teacher_ckpt is None, so the teacher keeps its random '
                      'initialisation. Distilling from it is meaningless; this is only useful '
                      'for smoke tests.', logger='current', level=30)
        else:
            #: the teacher checkpoint's ``meta`` (its ``dataset_meta`` classes are checked
            #: against the data set by tools/train.py)
            self.teacher_ckpt_meta = load_strict(teacher_model, teacher_ckpt, role='teacher')
            print_log(f'DistillDetector: loaded teacher weights strictly from {teacher_ckpt}',
                      logger='current')
        self.teacher_ckpt = teacher_ckpt
        # Outside nn.Module's registry on purpose: see the class docstring.
        object.__setattr__(self, 'teacher', freeze(teacher_model))
        self.init_student_from_teacher = resolve_module_map(init_student_from_teacher)
        if self.init_student_from_teacher:
            copy_teacher_modules(self.student, self.teacher, self.init_student_from_teacher)

        if teacher_preprocess not in ('auto', 'same'):
            raise ValueError("teacher_preprocess must be 'auto' or 'same'")
        t_dp = teacher_cfg.get('data_preprocessor') if teacher_preprocess == 'auto' else None
        self.teacher_inputs = TeacherInputAdapter(dp_cfg, t_dp)
        print_log(f'DistillDetector: {self.teacher_inputs.describe()}', logger='current')

        self.distill_losses = nn.ModuleDict(self._build_losses(distill_losses))
        for loss in self.distill_losses.values():
            loss.setup(self.student, self.teacher)
        #: measures, reports and (auto_balance) rescales the distillation terms; None when off
        self.loss_balance = LossBalancer.from_detector(self.distill_losses, distill_losses,
                                                       balance_report, auto_balance, self.student)
        self._check_classes()
        self.predict_with_teacher = False
        self.min_gt_wh = float(min_gt_wh)
        self._num_dropped_gt = 0

    # ---- construction helpers ---------------------------------------------------------------
    @staticmethod
    def _build_losses(cfgs: Union[Dict[str, dict], Sequence[dict], None]) -> Dict[str, nn.Module]:
        if not cfgs:
            return {}
        if isinstance(cfgs, (dict, ConfigDict)):
            items = list(cfgs.items())
        else:
            items = []
            for cfg in cfgs:
                items.append((loss_name_for(str(cfg['type'])), cfg))
        losses: Dict[str, nn.Module] = {}
        for name, cfg in items:
            if not name.startswith('loss_'):
                raise ValueError(f"distill loss name {name!r} must start with 'loss_' (mmengine "
                                 f"only back-propagates keys containing 'loss'): rename it to "
                                 f"'loss_{name}'.")
            if name in losses:
                raise ValueError(f'two distill losses are named {name!r}; use the dict form '
                                 'with distinct names')
            try:
                loss = MODELS.build(cfg)
            except TypeError as exc:  # a misspelt option: name the loss and its valid options
                raise (unknown_option_error(exc, MODELS.get(cfg['type']), f'distill loss '
                                            f'{name!r}') or exc) from None
            if not isinstance(loss, BaseDistillLoss):
                raise TypeError(f'{name}: {type(loss).__name__} is not an mmkd distillation '
                                'loss (subclass mmkd.models.BaseDistillLoss).')
            losses[name] = loss
        return losses

    def _check_classes(self) -> None:
        ns, nt = num_classes_of(self.student), num_classes_of(self.teacher)
        strict = [n for n, loss in self.distill_losses.items() if loss.requires_same_classes]
        if ns is not None and nt is not None and ns != nt and strict:
            raise ValueError(
                f'teacher has {nt} classes and student {ns}, but {strict} compare class-wise '
                'outputs. Use a teacher trained on the same classes (set num_classes in both '
                'configs to your dataset\'s), or losses that declare requires_same_classes=False.')

    def init_weights(self) -> None:
        """mmengine's ``init_weights``, then the ``init_student_from_teacher`` modules are
        copied from the (frozen) teacher again, so no parent module's ``init_cfg`` overwrites
        them."""
        super().init_weights()
        if self.init_student_from_teacher:
            copy_teacher_modules(self.student, self.teacher, self.init_student_from_teacher,
                                 log=False)

    # ---- the teacher stays frozen, in eval mode, and moves with the model ------------------
    def _apply(self, fn, *args, **kwargs):  # noqa: D401 - nn.Module API
        """Apply ``fn`` (device/dtype moves) to the student side and to the hidden teacher."""
        super()._apply(fn, *args, **kwargs)
        self.teacher._apply(fn, *args, **kwargs)
        return self

    def train(self, mode: bool = True) -> 'DistillDetector':
        """Set the student side's mode; the teacher always stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: 'OptimWrapper | OptimWrapperDict') -> Dict[str, Tensor]:
        """mmengine's train step, also with several optimisers (an ``OptimWrapperDict`` built by
        :class:`~mmkd.engine.DistillOptimWrapperConstructor`, e.g. ICD's AdamW for its modules)."""
        if isinstance(optim_wrapper, OptimWrapperDict):
            from ...engine.optim.multi_optim import train_step_multi_optim
            return train_step_multi_optim(self, data, optim_wrapper)
        return super().train_step(data, optim_wrapper)

    # ---- BaseDetector API ---------------------------------------------------------------------
    def extract_feat(self, batch_inputs: Tensor) -> Tuple[Tensor, ...]:
        """The student's features."""
        return self.student.extract_feat(batch_inputs)

    def _forward(self, batch_inputs: Tensor, batch_data_samples: SampleList = None):
        """``tensor`` mode: the student's raw outputs."""
        return self.student._forward(batch_inputs, batch_data_samples)

    def predict(self, batch_inputs: Tensor, batch_data_samples: SampleList,
                rescale: bool = True) -> SampleList:
        """The student's predictions (the teacher's when ``predict_with_teacher`` is set, which
        :class:`~mmkd.engine.TeacherEvalHook` does to evaluate the teacher once)."""
        if self.predict_with_teacher:
            with torch.no_grad():
                inputs = self._teacher_batch(batch_inputs, batch_data_samples)
                return self.teacher.predict(inputs, batch_data_samples, rescale=rescale)
        return self.student.predict(batch_inputs, batch_data_samples, rescale=rescale)

    def _teacher_batch(self, batch_inputs: Tensor, batch_data_samples: SampleList) -> Tensor:
        shapes = [ds.img_shape for ds in batch_data_samples]
        return self.teacher_inputs(batch_inputs, shapes)

    def teacher_features(self, batch_inputs: Tensor,
                         batch_data_samples: SampleList) -> Tuple[Tensor, ...]:
        """The teacher's (B, C, h_l, w_l) neck features of the student's (B, C, H, W) batch,
        on the student's grid: computed from the teacher's own input convention, then cropped
        back to the student's extent where the teacher pads further (larger
        ``pad_size_divisor``)."""
        t_inputs = self._teacher_batch(batch_inputs, batch_data_samples)
        return self.teacher_inputs.crop_features(self.teacher.extract_feat(t_inputs),
                                                 batch_inputs.shape[-2:], t_inputs.shape[-2:])

    def loss(self, batch_inputs: Tensor, batch_data_samples: SampleList) -> Dict[str, Tensor]:
        """Student detection losses plus weighted distillation losses (``loss_*`` keys)."""
        self._drop_degenerate_gt(batch_data_samples)
        progress = TrainProgress.current()
        weights = {n: loss.weight(progress) for n, loss in self.distill_losses.items()}
        needs = set().union(*(l.needs for n, l in self.distill_losses.items() if weights[n]))

        with ExitStack() as stack:
            feat_rec = stack.enter_context(MethodRecorder(self.student, 'extract_feat'))
            roi_rec = head_rec = tgt_rec = None
            if 'student_rois' in needs:
                roi_rec = stack.enter_context(MethodRecorder(self.student.roi_head, 'bbox_loss'))
            if needs & {'student_head', 'student_dense_targets'}:
                head_rec = stack.enter_context(MethodRecorder(self.student.bbox_head, 'forward'))
            if 'student_dense_targets' in needs:
                tgt_rec = stack.enter_context(
                    MethodRecorder(self.student.bbox_head, 'get_targets'))
            losses = self.student.loss(batch_inputs, batch_data_samples)
        if not self.distill_losses:
            return losses
        if not feat_rec.calls:
            raise RuntimeError(f'{type(self.student).__name__}.loss did not call extract_feat; '
                               'DistillDetector cannot see its features.')

        ctx = DistillContext(
            self.student, self.teacher, batch_data_samples,
            student_feats=tuple(feat_rec.outputs[0]),
            teacher_feats=lambda: self.teacher_features(batch_inputs, batch_data_samples),
            progress=progress,
            student_head_outs=head_rec.outputs[0] if head_rec and head_rec.calls else None,
            student_rois=self._student_rois(roi_rec) if roi_rec else None,
            student_dense=self._student_dense(tgt_rec, head_rec) if tgt_rec else None,
            batch_inputs=batch_inputs,
            teacher_inputs=lambda x: self._teacher_batch(x, batch_data_samples))

        anchor = ctx.student_feats[0]
        terms: Dict[str, str] = {}  # distillation loss key -> loss name, for loss_balance
        for name, loss in self.distill_losses.items():
            if name in losses:
                raise KeyError(f'distill loss {name!r} collides with a student loss of the same '
                               'name; rename it')
            if weights[name] == 0.0:  # stopped by its schedule: skip the work, keep the graph
                losses[name] = loss.zero(anchor)
                continue
            out = loss(ctx)
            if isinstance(out, dict):
                for k, v in out.items():
                    key = term_key(name, k)
                    losses[key] = v * weights[name] if 'loss' in key else v
                    if 'loss' in key and k not in loss.balance_exclude:
                        terms[key] = name  # measured (excluded terms: see loss_balance.py)
            else:
                losses[name] = out * weights[name]
                terms[name] = name
        if self.loss_balance is not None:
            return self.loss_balance(losses, terms, weights, progress, self.training)
        return losses

    def _drop_degenerate_gt(self, batch_data_samples: SampleList) -> None:
        """Remove GT boxes smaller than ``min_gt_wh`` or with non-finite coordinates, in place."""
        dropped = 0
        for ds in batch_data_samples:
            gt = ds.gt_instances
            b = get_box_tensor(gt.bboxes)
            if b.numel() == 0:
                continue
            keep = torch.isfinite(b).all(1) & ((b[:, 2] - b[:, 0]) >= self.min_gt_wh) & (
                (b[:, 3] - b[:, 1]) >= self.min_gt_wh)
            if not bool(keep.all()):
                dropped += int((~keep).sum())
                ds.gt_instances = gt[keep]
        if dropped:
            before, self._num_dropped_gt = self._num_dropped_gt, self._num_dropped_gt + dropped
            if before == 0 or before // 1000 != self._num_dropped_gt // 1000:
                print_log(f'DistillDetector: dropped {dropped} degenerate GT box(es) in this '
                          f'batch ({self._num_dropped_gt} so far; min_gt_wh={self.min_gt_wh}). '
                          "Add dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1)) to the "
                          'train pipeline to remove them at load time.',
                          logger='current', level=30)

    def _student_dense(self, tgt_rec: MethodRecorder,
                       head_rec: MethodRecorder) -> Optional[StudentDenseTargets]:
        if not tgt_rec.calls or not head_rec.calls:
            return None
        args, kwargs, out = tgt_rec.calls[0]
        anchors = kwargs.get('anchor_list', args[0] if args else None)
        head = self.student.bbox_head
        return StudentDenseTargets(anchors=anchors, labels=list(out[0]),
                                   label_weights=list(out[1]),
                                   cls_scores=list(head_rec.outputs[0][0]),
                                   bbox_preds=list(head_rec.outputs[0][1]),
                                   num_classes=int(head.num_classes))

    @staticmethod
    def _student_rois(rec: MethodRecorder) -> Optional[StudentRoIs]:
        call = rec.first()
        if call is None:
            return None
        args, kwargs, out = call
        sampling_results = kwargs.get('sampling_results', args[-1] if args else None)
        rois = bbox2roi([res.priors for res in sampling_results])
        return StudentRoIs(sampling_results=list(sampling_results), rois=rois,
                           cls_score=out['cls_score'], bbox_pred=out['bbox_pred'],
                           bbox_feats=out['bbox_feats'])
