"""The built-in data's benchmark: its teacher, students and checkpoints, the ``--preset``
method sets, and the shipped synthetic config of every method (``METHODS``, used by
tools/benchmark_speed.py; the accuracy benchmark applies the method presets of
:mod:`mmkd.benchmark.presets`, which resolve to the same settings)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

SYN = 'configs/synthetic'
TEACHER_CONFIG = f'{SYN}/faster_rcnn_r34w32_fpn_36e_synthetic.py'
#: The teacher trained by TEACHER_CONFIG on the default built-in data, shipped with the repo
#: (tools/publish_checkpoint.py --fp16 --data data/synthetic of its epoch_36.pth).
SHIPPED_TEACHER = 'checkpoints/synthetic/faster_rcnn_r34w32_fpn_36e_synthetic.pth'
#: The teacher trains this many times as long as the students (36 vs 12 epochs by default).
TEACHER_EPOCH_FACTOR = 3
STUDENT_CONFIG = f'{SYN}/faster_rcnn_r18w16_fpn_12e_synthetic.py'
CLS_TEACHER_CONFIG = f'{SYN}/cls_teacher_r18w16_synthetic.py'
#: The built-in data set's config (train/val loaders and evaluator; data_root set per run).
DATA_CONFIG = 'configs/_base_/datasets/synthetic_detection.py'
#: The converged student of the finetune protocol: STUDENT_CONFIG trained as long as the
#: teacher (36 epochs), and its published checkpoint (fingerprinted like the teacher's).
STUDENT_INIT_CONFIG = f'{SYN}/faster_rcnn_r18w16_fpn_36e_synthetic.py'
SHIPPED_STUDENT = 'checkpoints/synthetic/faster_rcnn_r18w16_fpn_36e_synthetic.pth'
TEACHER_LABEL = 'teacher: Faster R-CNN R34, half width, 36 epochs'
STUDENT_LABEL = 'student: Faster R-CNN R18, quarter width'


@dataclass(frozen=True)
class MethodSpec:
    """One row of the benchmark.

    Attributes:
        name: short name used on the command line, in folder names and in the report.
        config: config path relative to the checkout.
        role: ``'teacher'`` (the detector teacher, trained once), ``'student'`` (the plain
            student), ``'baseline'`` (another plain detector a method must be compared with,
            e.g. a student widened as a method needs) or ``'distill'`` (a DistillDetector
            config).
        cfg_options: extra ``key=value`` overrides for this method (e.g. the PGM mode).
        cls_teacher: True when the teacher is DICOD's crop classifier (trained by
            ``tools/train_cls_teacher.py``) instead of the detector teacher.
        label: human-readable description for the report.
        baseline: the plain model this method's gain is measured against (the plain student,
            or a ``'baseline'`` row when the method changes the student's architecture).
    """
    name: str
    config: str
    role: str = 'distill'
    cfg_options: Tuple[str, ...] = field(default_factory=tuple)
    cls_teacher: bool = False
    label: str = ''
    baseline: str = 'student'


_LIST = [
    MethodSpec('teacher', TEACHER_CONFIG, 'teacher',
               label='teacher: Faster R-CNN R34, half width, 36 epochs'),
    MethodSpec('student', STUDENT_CONFIG, 'student',
               label='student: Faster R-CNN R18, quarter width'),
    MethodSpec('feat_kl', f'{SYN}/kd_feat_kl_r34w32_r18w16_12e_synthetic.py',
               label='FPN feature imitation + RoI KL (foundation losses)'),
    MethodSpec('pgm', f'{SYN}/kd_pgm_r34w32_r18w16_12e_synthetic.py',
               cfg_options=('model.distill_losses.loss_gk.pgm.mode=offline', ),
               label='PGM + RDM, offline PGM (extra pass before each epoch)'),
    MethodSpec('pgm_online', f'{SYN}/kd_pgm_r34w32_r18w16_12e_synthetic.py',
               cfg_options=('model.distill_losses.loss_gk.pgm.mode=online', ),
               label='PGM + RDM, online PGM (memory bank)'),
    MethodSpec('icd', f'{SYN}/kd_icd_r34w32_r18w16_12e_synthetic.py', label='ICD'),
    MethodSpec('dsig', f'{SYN}/kd_dsig_r34w32_r18w16_12e_synthetic.py',
               label='DSIG (student neck widened to 128 ch)', baseline='student_n128'),
    MethodSpec('student_n128', f'{SYN}/faster_rcnn_r18w16n128_fpn_12e_synthetic.py', 'baseline',
               label='plain student with DSIG\'s 128-ch neck and heads (no distillation)'),
    MethodSpec('gid', f'{SYN}/kd_gid_r34w32_r18w16_12e_synthetic.py', label='GID'),
    MethodSpec('dicod', f'{SYN}/kd_dicod_r18w16cls_r18w16_12e_synthetic.py', cls_teacher=True,
               label='DICOD (teacher: crop classifier R18 quarter width, not the detector)'),
    MethodSpec('pkd', f'{SYN}/kd_pkd_r34w32_r18w16_12e_synthetic.py', label='PKD'),
    MethodSpec('cwd', f'{SYN}/kd_cwd_r34w32_r18w16_12e_synthetic.py', label='CWD'),
    MethodSpec('fgd', f'{SYN}/kd_fgd_r34w32_r18w16_12e_synthetic.py', label='FGD'),
    MethodSpec('mgd', f'{SYN}/kd_mgd_r34w32_r18w16_12e_synthetic.py', label='MGD'),
]
#: Every method the benchmark knows, by name, in report order.
METHODS: Dict[str, MethodSpec] = {m.name: m for m in _LIST}
DISTILL_METHODS: List[str] = [m.name for m in _LIST if m.role == 'distill']
#: Everything a benchmark can list besides the teacher and the plain student.
RUNNABLE: List[str] = [m.name for m in _LIST if m.role in ('distill', 'baseline')]


@dataclass(frozen=True)
class Preset:
    """Default methods, seeds and schedule of a ``--preset``."""
    methods: Tuple[str, ...]
    seeds: Tuple[int, ...]
    epochs: Optional[int] = None  # None: the student config's own length (12)
    description: str = ''


def _all_methods() -> Tuple[str, ...]:
    from .presets import METHOD_PRESETS
    return tuple(METHOD_PRESETS)


PRESETS: Dict[str, Preset] = {
    'quick': Preset(('pgm', ), (0, ), None,
                    'teacher, plain student and the PGM+RDM student, one seed'),
    'full': Preset(_all_methods(), (0, 1), None,
                   'teacher, plain student and every method, two seeds'),
}


def resolve_methods(preset: str, methods: Optional[Sequence[str]] = None) -> List[str]:
    """Methods to run: ``methods`` if given (names checked, ``NAME+ab`` allowed), else the
    preset's. The teacher and the plain student are always part of a benchmark."""
    if preset not in PRESETS:
        raise ValueError(f'unknown preset {preset!r}; choose one of {sorted(PRESETS)}')
    from .plan import expand_methods
    names = list(methods) if methods else list(PRESETS[preset].methods)
    return expand_methods(names)


def builtin_data_spec(data_root: str):
    """The :class:`~mmkd.benchmark.data.DataSpec` of the built-in data in ``data_root``
    (``DATA_CONFIG`` with its data_root and evaluator files pointed there)."""
    import os.path as osp

    from mmengine.config import Config

    from ..utils.paths import REPO_ROOT
    from .data import DataSpec, check_split, dataset_classes
    root = osp.abspath(data_root).rstrip('/') + '/'
    src = Config.fromfile(osp.join(REPO_ROOT, DATA_CONFIG))
    cfg = Config({k: src[k].to_dict() for k in ('train_dataloader', 'val_dataloader',
                                                'val_evaluator')})
    for key in ('train_dataloader', 'val_dataloader'):
        cfg[key]['dataset']['data_root'] = root
    cfg.val_evaluator.ann_file = root + 'annotations/instances_val.json'
    cfg.test_dataloader = cfg.val_dataloader.to_dict()
    cfg.test_evaluator = cfg.val_evaluator.to_dict()
    classes = dataset_classes(cfg)
    counts = {s: check_split(cfg, s, classes) for s in ('train', 'val')}
    return DataSpec(f'{data_root} (built-in synthetic data)', cfg, classes, counts)


def builtin_spec(data_root: str, methods: Sequence[str], seeds: Sequence[int], work_dir: str,
                 epochs: Optional[int] = None, protocol: str = 'scratch',
                 teacher_ckpt: Optional[str] = None, teacher_epochs: Optional[int] = None,
                 student_ckpt: Optional[str] = None, student_init_epochs: Optional[int] = None,
                 cls_epochs: Optional[int] = None, extra_options: Sequence[str] = (),
                 auto_balance: bool = False):
    """The :class:`~mmkd.benchmark.plan.BenchmarkSpec` of the built-in data in ``data_root``:
    its teacher (``teacher_ckpt``, else trained), student, DICOD's classifier teacher, the
    built-in tuning, and for ``finetune`` the converged student (``student_ckpt``, else
    trained for ``student_init_epochs``, default that of ``STUDENT_INIT_CONFIG``)."""
    import os.path as osp

    from mmengine.config import Config

    from ..utils.paths import REPO_ROOT
    from .plan import BenchmarkSpec
    from .presets import synthetic_tuning
    if student_init_epochs is None:
        student_init_epochs = int(Config.fromfile(
            osp.join(REPO_ROOT, STUDENT_INIT_CONFIG)).train_cfg.max_epochs)
    return BenchmarkSpec(
        data=builtin_data_spec(data_root), teacher=TEACHER_CONFIG, student=STUDENT_CONFIG,
        methods=list(methods), seeds=list(seeds), work_dir=work_dir, epochs=epochs,
        protocol=protocol, teacher_ckpt=teacher_ckpt, teacher_epochs=teacher_epochs,
        student_ckpt=student_ckpt, student_init_epochs=student_init_epochs,
        cls_teacher=CLS_TEACHER_CONFIG, cls_epochs=cls_epochs, tuning=synthetic_tuning(),
        extra_options=list(extra_options), auto_balance=auto_balance,
        teacher_label=TEACHER_LABEL, student_label=STUDENT_LABEL, builtin=True)
