"""The benchmark's method registry and presets (data only; no training happens here)."""
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


PRESETS: Dict[str, Preset] = {
    'quick': Preset(('pgm', ), (0, ), None,
                    'teacher, plain student and the PGM+RDM student, one seed'),
    'full': Preset(tuple(RUNNABLE), (0, 1), None,
                   'teacher, plain student and every method, two seeds'),
}


def resolve_methods(preset: str, methods: Optional[Sequence[str]] = None) -> List[str]:
    """Methods (and extra baselines) to run: ``methods`` if given (names checked), else the
    preset's.

    The teacher and the plain student are always part of a benchmark and are not listed here.
    """
    if preset not in PRESETS:
        raise ValueError(f'unknown preset {preset!r}; choose one of {sorted(PRESETS)}')
    names = list(methods) if methods else list(PRESETS[preset].methods)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f'unknown method(s) {unknown}; known: {", ".join(METHODS)}')
    return [n for n in dict.fromkeys(names) if METHODS[n].role in ('distill', 'baseline')]
