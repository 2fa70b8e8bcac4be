"""Plan a benchmark: check the data and the pair, apply every method's preset, and list the runs.

Everything that can be wrong with the input is found here, before any training: a data set
whose classes differ from the teacher's, a checkpoint that does not fit its config, a student
that is not a detector, an empty split, an unknown method. Methods that cannot apply to the pair
are not errors: they are listed in ``Plan.skipped`` with the reason.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os.path as osp
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config

from ..utils.config import ModelSpec
from .compose import (PairError, base_config, build_model, check_checkpoint, check_classes,
                      check_detector, cls_teacher_config, distill_config, finetune_student,
                      is_exported, load_model, plain_config, resolved, set_num_classes)
from .data import DataSpec
from .presets import (AB_SUFFIX, METHOD_PRESETS, MethodPlan, PairInfo, PresetContext, Skip,
                      base_method)
from .runs import (CONFIG_NAME, DEFAULT_PIXELS, Plan, Run, apply_options, cached_digest,
                   config_hash, schedule_options, seed_options, split_method_options)

PROTOCOLS = ('scratch', 'finetune')
#: The teacher trains this many times as long as the students when the benchmark trains it.
TEACHER_EPOCH_FACTOR = 3


@dataclass
class BenchmarkSpec:
    """What to benchmark.

    Attributes:
        data: the data (:func:`mmkd.benchmark.data.resolve_data`).
        teacher / student: model specs (config path, ``mmdet::`` path or model dict).
        methods: preset names; ``NAME+ab`` runs NAME with ``model.auto_balance=True``.
        seeds: one run of the student and of each method per seed.
        work_dir: runs go under ``runs/``, shared ones (teacher...) under ``cache/``.
        epochs: training length of every student run (default: the student config's).
        protocol: ``'scratch'`` (the student from its own init) or ``'finetune'`` (every run,
            the plain student included, starts from a converged student checkpoint).
        teacher_ckpt: the trained teacher; None trains one for ``teacher_epochs`` (default
            3 x ``epochs``).
        student_ckpt: the converged student of the finetune protocol.
        student_init_epochs: finetune without ``student_ckpt`` (and for students a method
            widens): train the converged student this long first (cached).
        cls_teacher / cls_teacher_ckpt / cls_epochs: DICOD's crop-classifier teacher (its
            config, a trained checkpoint of it, or the epochs to train it here).
        tuning: per-method data-set tuning (see :mod:`mmkd.benchmark.presets`).
        extra_options: ``--cfg-options`` for every run, ``METHOD:key=value`` for one row.
        auto_balance: add a ``NAME+ab`` row for every distillation method.
        teacher_label / student_label: the report's names of the two.
    """
    data: DataSpec
    teacher: ModelSpec
    student: ModelSpec
    methods: List[str]
    seeds: List[int]
    work_dir: str
    epochs: Optional[int] = None
    protocol: str = 'scratch'
    teacher_ckpt: Optional[str] = None
    teacher_epochs: Optional[int] = None
    student_ckpt: Optional[str] = None
    student_init_epochs: Optional[int] = None
    cls_teacher: Optional[str] = None
    cls_teacher_ckpt: Optional[str] = None
    cls_epochs: Optional[int] = None
    tuning: Dict[str, dict] = field(default_factory=dict)
    extra_options: List[str] = field(default_factory=list)
    auto_balance: bool = False
    teacher_label: str = ''
    student_label: str = ''
    builtin: bool = False


def expand_methods(methods: Sequence[str], auto_balance: bool = False) -> List[str]:
    """Method row names: unknown names raise ``ValueError`` listing the valid ones; with
    ``auto_balance`` each method is followed by its ``+ab`` row."""
    out: List[str] = []
    unknown = [m for m in methods if base_method(m) not in METHOD_PRESETS]
    if unknown:
        raise ValueError(f'unknown method(s) {unknown}; valid: {", ".join(METHOD_PRESETS)} '
                         f'(each also as NAME{AB_SUFFIX}: with model.auto_balance=True)')
    for m in methods:
        for name in ([m, base_method(m) + AB_SUFFIX] if auto_balance else [m]):
            if name not in out:
                out.append(name)
    return out


def check_auto_balance() -> None:
    """Raise when this mmkd's DistillDetector has no ``auto_balance`` option."""
    import inspect

    from ..models.detectors.distill_detector import DistillDetector
    if 'auto_balance' not in inspect.signature(DistillDetector.__init__).parameters:
        raise PairError('--auto-balance / NAME+ab rows need DistillDetector(auto_balance=...), '
                        'which this mmkd does not have yet; drop --auto-balance.')


def _pixels(cfg: Config) -> int:
    for step in cfg.train_dataloader.dataset.get('pipeline') or []:
        scale = step.get('scale') if isinstance(step, dict) else None
        if step.get('type') == 'Resize' and isinstance(scale, (tuple, list)) and len(scale) == 2:
            return int(scale[0]) * int(scale[1])
    return DEFAULT_PIXELS


class _Planner:
    def __init__(self, spec: BenchmarkSpec, printer: Callable[[str], None]) -> None:
        self.spec, self.print = spec, printer
        self.work_dir = osp.abspath(spec.work_dir)
        self.rows = expand_methods(spec.methods, spec.auto_balance)
        known = list(METHOD_PRESETS) + [m + AB_SUFFIX for m in METHOD_PRESETS] + [
            'teacher', 'student', 'cls_teacher', 'student_init']
        self.shared, self.per_row = split_method_options(spec.extra_options, known)
        self.notes: Dict[str, List[str]] = {}
        self.setup: List[str] = []

    # ---- config helpers -----------------------------------------------------------------------
    def finish(self, cfg: Config, row: str, seed: int, epochs: int) -> Config:
        """Shared and per-row options, then the schedule for ``epochs`` and the seed."""
        cfg = apply_options(copy.deepcopy(cfg), self.shared)
        cfg = apply_options(cfg, self.per_row.get(row, []) + (
            self.per_row.get(base_method(row), []) if row != base_method(row) else []))
        ipe = self.iters(cfg, 'train')
        return apply_options(cfg, schedule_options(cfg, epochs, ipe) + seed_options(seed))

    def iters(self, cfg: Config, split: str) -> int:
        n = self.spec.data.counts.get('val' if split == 'test' else split, 0)
        loader = cfg.get(f'{split}_dataloader') or {}
        return math.ceil(n / max(1, int(loader.get('batch_size', 1))))

    def make(self, name: str, role: str, cfg: Config, seed: int, epochs: int,
             folder: Optional[str] = None, extra: str = '', needs: Sequence[str] = ()) -> Run:
        key = config_hash(cfg, seed, extra)
        wd = osp.join(self.work_dir, 'cache', folder.format(key=key[:12])) if folder else \
            osp.join(self.work_dir, 'runs', name, f'seed{seed}-{key[:8]}')
        return Run(name, role, osp.join(wd, CONFIG_NAME), seed, [], wd, key, epochs,
                   self.iters(cfg, 'train'), self.iters(cfg, 'test'), needs=list(needs),
                   cfg=cfg.to_dict(), pixels=_pixels(cfg))

    # ---- the plan -----------------------------------------------------------------------------
    def build(self) -> Plan:
        spec = self.spec
        if spec.protocol not in PROTOCOLS:
            raise ValueError(f'unknown protocol {spec.protocol!r}; choose one of {PROTOCOLS}')
        if not spec.seeds:
            raise ValueError('at least one seed is needed')
        if any(r.endswith(AB_SUFFIX) for r in self.rows):
            check_auto_balance()
        classes = spec.data.classes
        base = apply_options(base_config(spec.student, spec.data), self.shared)
        epochs = int(spec.epochs or base.train_cfg.get('max_epochs', 12))

        # the pair, checked
        student_model = load_model(spec.student, 'student')
        old = set_num_classes(student_model, len(classes))
        if old is not None:
            self.setup.append(f'student: num_classes set to {len(classes)} from the data '
                              f'(the config has {old})')
        student = build_model(student_model)
        check_detector(student, spec.student, 'student')
        teacher_model = load_model(spec.teacher, 'teacher')
        teacher = build_model(teacher_model)
        check_detector(teacher, spec.teacher, 'teacher')
        check_classes(teacher, spec.teacher, 'teacher', classes)
        teacher_meta, given = {}, None
        if spec.teacher_ckpt:
            given = resolved(spec.teacher_ckpt, 'teacher', '--teacher-ckpt')
            teacher_meta = check_checkpoint(teacher, given, spec.teacher, 'teacher', classes,
                                            '--teacher-ckpt')
        pair = PairInfo.from_models(student, teacher)

        runs: List[Run] = []
        # the teacher: evaluated (given) or trained (cached)
        t_cfg = plain_config(base, teacher_model)
        if given:
            t_epochs = int(teacher_meta.get('epoch') or spec.teacher_epochs or epochs)
            t_cfg = self.finish(t_cfg, 'teacher', 0, t_epochs)
            teacher_run = self.make('teacher', 'teacher', t_cfg, 0, t_epochs, 'teacher-{key}',
                                    extra=f'given_ckpt={cached_digest(given)}')
            teacher_run.given_checkpoint = given
        else:
            t_epochs = spec.teacher_epochs or TEACHER_EPOCH_FACTOR * epochs
            t_cfg = self.finish(t_cfg, 'teacher', 0, t_epochs)
            teacher_run = self.make('teacher', 'teacher', t_cfg, 0, t_epochs, 'teacher-{key}')
        runs.append(teacher_run)

        # DICOD's classifier teacher
        cls_model = cls_cfg = cls_ckpt = cls_run = None
        if any(base_method(r) == 'dicod' for r in self.rows) and (
                spec.cls_teacher or spec.cls_teacher_ckpt):
            if not spec.cls_teacher:
                raise PairError('--cls-teacher-ckpt needs --cls-teacher CONFIG (the classifier '
                                'config it was trained with)')
            cls_cfg = cls_teacher_config(spec.cls_teacher, spec.data)
            cls_cfg.cls_train_cfg.seed = 0
            cls_model = build_model(cls_cfg.model)
            if spec.cls_teacher_ckpt:
                cls_ckpt = resolved(spec.cls_teacher_ckpt, 'teacher', '--cls-teacher-ckpt')
                check_checkpoint(cls_model, cls_ckpt, spec.cls_teacher, 'teacher', classes,
                                 '--cls-teacher-ckpt')
            else:
                key = config_hash(cls_cfg, 0, f'cls_epochs={spec.cls_epochs}')
                wd = osp.join(self.work_dir, 'cache', f'cls_teacher-{key[:12]}')
                cls_run = Run('cls_teacher', 'cls_teacher', osp.join(wd, CONFIG_NAME), 0, [],
                              wd, key, epochs, cls_epochs=spec.cls_epochs,
                              cfg=cls_cfg.to_dict())
                cls_ckpt = cls_run.final_checkpoint
                runs.append(cls_run)

        # the finetune protocol's start
        starts: Dict[str, Tuple[str, str, Optional[Run]]] = {}  # row -> (ckpt, digest, run)
        if spec.protocol == 'finetune':
            student_model = finetune_student(student_model)
            if spec.student_ckpt:
                ckpt = resolved(spec.student_ckpt, 'student', '--student-ckpt')
                check_checkpoint(student, ckpt, spec.student, 'student', classes,
                                 '--student-ckpt')
                if not is_exported(ckpt):
                    raise PairError(f'--student-ckpt {ckpt} is a distillation checkpoint '
                                    '(student.* keys); export its student first: python '
                                    f'tools/export_student.py {ckpt}')
                starts['student'] = (ckpt, f'start={cached_digest(ckpt)}', None)
            elif spec.student_init_epochs:
                run = self.init_run('student_init', student_model, base)
                runs.append(run)
                starts['student'] = (run.final_checkpoint, f'start={run.key}', run)
            else:
                raise PairError('the finetune protocol starts every run from a converged '
                                'student: give --student-ckpt S.pth (train it with python '
                                'tools/train.py S.py), or use --protocol scratch')

        # the presets
        total_iters = self.iters(base, 'train') * epochs
        ctx = PresetContext(pair, student, teacher, student_model, base, spec.protocol,
                            spec.tuning, total_iters=total_iters, build_student=build_model)
        plans: Dict[str, MethodPlan] = {}
        skipped: List[Tuple[str, str]] = []
        for name in dict.fromkeys(base_method(r) for r in self.rows):
            preset = METHOD_PRESETS[name]
            c = ctx
            if preset.teacher == 'classifier':
                c = dataclasses.replace(
                    ctx, teacher=cls_model,
                    pair=PairInfo.from_models(student, cls_model) if cls_model else pair,
                    cls_crop_size=int(cls_cfg.crop_cfg.crop_size) if cls_cfg else None)
            try:
                mp = preset.apply(c)
            except Skip as exc:
                skipped.append((name, str(exc)))
                continue
            if mp.student is not None and spec.protocol == 'finetune':
                if not spec.student_init_epochs:
                    what = mp.notes[-1] if mp.notes else 'another architecture'
                    skipped.append((name, f'it changes the student ({what}), and the finetune '
                                    'protocol has no converged checkpoint of that student '
                                    '(mmkd trains one only with --student-init-epochs)'))
                    continue
                if mp.baseline not in starts:
                    run = self.init_run(f'student_init_{mp.baseline[len("student_"):]}',
                                        finetune_student(mp.student), base)
                    runs.append(run)
                    starts[mp.baseline] = (run.final_checkpoint, f'start={run.key}', run)
            plans[name] = mp
            self.notes[name] = mp.notes

        rows = [r for r in self.rows if base_method(r) in plans]
        labels = {'teacher': spec.teacher_label or f'teacher: {spec.teacher}',
                  'student': spec.student_label or f'student: {spec.student}'}
        baselines: Dict[str, str] = {}
        extra_rows: List[str] = []
        for r in rows:
            mp = plans[base_method(r)]
            labels[r] = mp.label + (' + auto-balance' if r.endswith(AB_SUFFIX) else '')
            baselines[r] = mp.baseline
            if mp.baseline != 'student' and mp.baseline not in extra_rows:
                extra_rows.append(mp.baseline)
                labels[mp.baseline] = mp.baseline_label
        order = []
        for r in rows:  # a baseline row right after the first method that needs it
            order.append(r)
            b = baselines[r]
            if b != 'student' and b not in order:
                order.append(b)

        # per seed: the plain student, the baselines, the methods
        for seed in spec.seeds:
            ckpt, extra, init = starts.get('student', (None, '', None))
            cfg = self.finish(plain_config(base, student_model, ckpt), 'student', seed, epochs)
            runs.append(self.make('student', 'student', cfg, seed, epochs, extra=extra,
                                  needs=[init.work_dir] if init else []))
            for r in order:
                if r in extra_rows:
                    mp = next(plans[base_method(x)] for x in rows if baselines[x] == r)
                    model = finetune_student(mp.student) if spec.protocol == 'finetune' \
                        else mp.student
                    ckpt, extra, init = starts.get(r, (None, '', None))
                    cfg = self.finish(plain_config(base, model, ckpt), r, seed, epochs)
                    runs.append(self.make(r, 'student', cfg, seed, epochs, extra=extra,
                                          needs=[init.work_dir] if init else []))
                    continue
                mp = plans[base_method(r)]
                if mp.teacher == 'classifier':
                    t_model, t_ckpt, dep = cls_cfg.model.to_dict(), cls_ckpt, cls_run
                    t_key = cls_run.key if cls_run else f'cls={cached_digest(cls_ckpt)}'
                else:
                    t_model, t_ckpt, dep = teacher_model, teacher_run.final_checkpoint, \
                        teacher_run
                    t_key = teacher_run.key
                s_model = mp.student if mp.student is not None else student_model
                ckpt, extra, init = starts.get(mp.baseline, (None, '', None))
                if spec.protocol == 'finetune':
                    s_model = finetune_student(s_model)
                mp_run = dataclasses.replace(mp, student=s_model)
                cfg = distill_config(base, mp_run, student_model, t_model, t_ckpt, ckpt,
                                     auto_balance=r.endswith(AB_SUFFIX))
                cfg = self.finish(cfg, r, seed, epochs)
                needs = [d.work_dir for d in (dep, init) if d is not None]
                runs.append(self.make(r, 'distill', cfg, seed, epochs,
                                      extra=f'teacher={t_key} {extra}', needs=needs))

        data = spec.data
        self.setup = [f'data: {data.describe()}',
                      f'teacher: {spec.teacher} ({pair.teacher_type}, '
                      f'{"two" if pair.teacher_two_stage else "one"}-stage, '
                      f'{pair.teacher_channels}-ch FPN), checkpoint '
                      f'{spec.teacher_ckpt or "trained here"}',
                      f'student: {spec.student} ({pair.student_type}, {pair.kind}, '
                      f'{pair.student_channels}-ch FPN)'] + self.setup
        if spec.protocol == 'finetune':
            start = spec.student_ckpt or 'the converged student trained here first'
            self.setup.append(f'protocol: finetune: every run starts from {start} and trains '
                              f'{epochs} more epochs')
        else:
            self.setup.append(f'protocol: scratch: every run trains {epochs} epochs from the '
                              'student\'s own initialisation')
        return Plan(runs, order, list(spec.seeds), epochs, self.work_dir,
                    extra_options=list(spec.extra_options), protocol=spec.protocol,
                    labels=labels, baselines=baselines, skipped=skipped, notes=self.notes,
                    setup=self.setup, builtin=spec.builtin)

    def init_run(self, name: str, model: dict, base: Config) -> Run:
        """A converged student trained ``student_init_epochs`` from its own init (cached)."""
        ep = int(self.spec.student_init_epochs)
        cfg = self.finish(plain_config(base, model), 'student_init', 0, ep)
        return self.make(name, 'student_init', cfg, 0, ep, name + '-{key}')


def build_plan(spec: BenchmarkSpec, printer: Callable[[str], None] = print) -> Plan:
    """Check the input and list every run of the benchmark ``spec`` (nothing is trained)."""
    return _Planner(spec, printer).build()
