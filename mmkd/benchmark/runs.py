"""Runs of the benchmark: their configs' hashes, caching, resuming, time estimates and the
training / test subprocesses.

Every training and every evaluation is a fresh ``tools/train.py`` / ``tools/test.py`` (or
``tools/train_cls_teacher.py``) subprocess on the run's own config file
(``<run work dir>/benchmark_config.py``, written in full by :mod:`mmkd.benchmark.plan`). A run's
folder name holds a hash of everything that defines it (the full config, its seed, the
annotation files and the checkpoints it starts from), so:

* the teacher is evaluated (or trained) once per distinct setup and shared through
  ``<work_dir>/cache/teacher-<hash>/`` (DICOD's classifier teacher and the converged students
  of the finetune protocol likewise, ``cls_teacher-`` / ``student_init-``);
* a finished run (``metrics.json`` present) is skipped; a trained but untested one is only
  tested; an interrupted one continues with ``--resume`` from its ``last_checkpoint``;
* changing a config, the schedule, the data or a checkpoint starts new runs instead of mixing
  results.
"""
from __future__ import annotations

import ast
import copy
import glob
import hashlib
import json
import math
import os
import os.path as osp
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config, DictAction

from ..utils.atomic import atomic_write
from ..utils.checkpoint import file_sha256
from ..utils.config import write_config
from ..utils.paths import REPO_ROOT

#: COCO metrics read from tools/test.py's results, in report order.
METRIC_KEYS = ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75', 'coco/bbox_mAP_s',
               'coco/bbox_mAP_m', 'coco/bbox_mAP_l')
#: Rough seconds per training iteration on a 2-core CPU at 160 px, batch 4, one run using both
#: cores (the first estimate only; measured rates from ``timings.json`` replace them).
DEFAULT_SEC_PER_ITER = {'teacher': 0.5, 'student': 0.28, 'distill': 0.38, 'pgm': 0.42,
                        'pgm_online': 0.4, 'icd': 0.5, 'dicod': 0.45, 'dsig': 0.6,
                        'gid': 0.45, 'mgd': 0.4, 'student_init': 0.28,
                        # DSIG's student widened to 128 channels, plain and converged
                        'student_n128': 0.5, 'student_init_n128': 0.5, 'cls_teacher': 0.02}
#: Runs side by side on one thread each train this much slower per iteration than one run on
#: every core (measured by the last full benchmark on the 2-core machine: its default-rate ETA
#: was 1.7x too short).
LANE_SLOWDOWN = 1.7
#: Pixels per image the default rates were measured at (160 x 160).
DEFAULT_PIXELS = 160 * 160
#: mmdet's CocoMetric logs this (and returns no metrics) when a model detects nothing.
EMPTY_RESULTS = 'The testing results of the whole dataset is empty'
STARTUP_SECONDS = 15.0  # importing torch/mmdet and building a runner, per subprocess
#: The config file of a run, inside its work dir.
CONFIG_NAME = 'benchmark_config.py'


# ---- options and schedules ---------------------------------------------------------------------
def parse_options(options: Sequence[str]) -> dict:
    """``['a.b=1', 'c=[1,2]']`` -> ``{'a.b': 1, 'c': [1, 2]}``, parsed as ``--cfg-options``."""
    out = {}
    for item in options:
        if '=' not in item:
            raise ValueError(f'cfg option {item!r} is not of the form key=value')
        key, value = item.split('=', 1)
        out[key] = DictAction._parse_iterable(value)
    return out


_FILE_CACHE: Dict[str, Config] = {}


def load_resolved(config: str, options: Sequence[str] = ()) -> Config:
    """The config file with ``options`` merged, as tools/train.py would see it (each file is
    parsed once per process; the options are merged into a copy)."""
    from ..utils.paths import resolve_path
    if config not in _FILE_CACHE:
        _FILE_CACHE[config] = Config.fromfile(resolve_path(config, 'config'))
    return apply_options(copy.deepcopy(_FILE_CACHE[config]), options)


def data_options(data_root: str) -> List[str]:
    """``--cfg-options`` pointing a synthetic-data config at the data set in ``data_root``
    (tools/benchmark_speed.py)."""
    root = osp.abspath(data_root).rstrip('/') + '/'
    ann = osp.join(root, 'annotations', 'instances_val.json')
    return [f'train_dataloader.dataset.data_root={root}',
            f'val_dataloader.dataset.data_root={root}',
            f'test_dataloader.dataset.data_root={root}',
            f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}']


def apply_options(cfg: Config, options: Sequence[str]) -> Config:
    """``cfg`` with ``options`` merged in place (``--cfg-options`` semantics); returns it."""
    if options:
        cfg.merge_from_dict(parse_options(options))
    return cfg


def _milestones(old: Sequence[int], old_epochs: int, epochs: int) -> List[int]:
    """Milestones for ``epochs``: at 2/3 and 11/12 for mmdet's two-step shape,
    scaled proportionally otherwise."""
    if len(old) == 2:
        return [math.ceil(epochs * 2 / 3), math.ceil(epochs * 11 / 12)]
    return [max(1, math.ceil(m * epochs / old_epochs)) for m in old]


def _scheduler_options(prefix: str, scheds: Sequence[dict], old_epochs: int,
                       epochs: int, iters_per_epoch: Optional[int] = None) -> List[str]:
    opts = []
    for i, s in enumerate(scheds):
        key = f'{prefix}.{i}'
        if not s.get('by_epoch', True):
            # an iteration-based warm-up keeps its length, at most one epoch
            end = s.get('end')
            if iters_per_epoch and isinstance(end, int) and end > iters_per_epoch:
                opts.append(f'{key}.end={iters_per_epoch}')
            continue
        if 'milestones' in s:
            ms = _milestones(list(s['milestones']), old_epochs, epochs)
            opts.append(f'{key}.milestones=[{",".join(map(str, ms))}]')
        if 'T_max' in s:
            opts.append(f'{key}.T_max={epochs}')
        if s.get('end') is not None:
            opts.append(f'{key}.end={epochs}')
        if s.get('begin', 0) >= epochs:
            raise ValueError(f'{key} begins at epoch {s["begin"]}, after the last of {epochs} '
                             'epochs; use more --epochs')
    return opts


def schedule_options(cfg: Config, epochs: int, iters_per_epoch: Optional[int] = None
                     ) -> List[str]:
    """``--cfg-options`` that set a config's training length to ``epochs``, uniformly.

    Sets ``train_cfg.max_epochs``, skips validation during training (every run is tested once
    by tools/test.py afterwards), saves a checkpoint every epoch (for resume), and moves the
    epoch-based learning-rate schedule: MultiStepLR milestones to 2/3 and 11/12 of the run,
    ``end`` and cosine ``T_max`` to the last epoch. An iteration-based warm-up longer than one
    epoch (``iters_per_epoch``) is cut to one epoch, and so is a logging interval (the report's
    loss curves need logged steps; mmengine < 0.8 does not log an epoch's last iteration).
    ``param_scheduler`` may be a list or a dict of lists (one per optimiser, as ICD's
    ``{student: [...], distill: [...]}``).
    """
    if epochs < 1:
        raise ValueError('--epochs must be at least 1')
    old = int(cfg.train_cfg.get('max_epochs', epochs))
    opts = [f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}',
            f'train_cfg.val_begin={epochs + 1}',
            'default_hooks.checkpoint.interval=1', 'default_hooks.checkpoint.max_keep_ckpts=1']
    log_interval = cfg.get('default_hooks', {}).get('logger', {}).get('interval', 50)
    if iters_per_epoch and log_interval > iters_per_epoch:
        opts.append(f'default_hooks.logger.interval={iters_per_epoch}')
    sched = cfg.get('param_scheduler')
    if isinstance(sched, dict) and 'type' not in sched:
        for name in sorted(sched):
            opts += _scheduler_options(f'param_scheduler.{name}', sched[name], old, epochs,
                                       iters_per_epoch)
    elif isinstance(sched, dict):
        opts += _scheduler_options('param_scheduler', [sched], old, epochs, iters_per_epoch)
        opts = [o.replace('param_scheduler.0.', 'param_scheduler.') for o in opts]
    elif sched:
        opts += _scheduler_options('param_scheduler', sched, old, epochs, iters_per_epoch)
    return opts


def seed_options(seed: int) -> List[str]:
    return [f'randomness.seed={seed}', 'randomness.deterministic=False']


# ---- hashing -----------------------------------------------------------------------------------
def file_digest(path: Optional[str]) -> str:
    """sha256 of a file, or ``'missing'``."""
    return file_sha256(path) if path and osp.isfile(path) else 'missing'


_DIGESTS: Dict[Tuple[str, float, int], str] = {}


def cached_digest(path: Optional[str]) -> str:
    """:func:`file_digest`, computed once per file version (path, mtime, size) per process."""
    if not path or not osp.isfile(path):
        return 'missing'
    st = os.stat(path)
    key = (osp.abspath(path), st.st_mtime, st.st_size)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_sha256(path)
    return _DIGESTS[key]


def _ann_path(loader: Any) -> str:
    ds = (loader or {}).get('dataset', {}) if isinstance(loader, dict) else {}
    while isinstance(ds, dict) and 'dataset' in ds and 'ann_file' not in ds:
        ds = ds['dataset']
    return osp.join(ds.get('data_root', '') or '', ds.get('ann_file', '') or '')


def config_hash(cfg: Config, seed: int, extra: str = '') -> str:
    """Stable hash of a run: its full config, its seed, the train and evaluation annotation
    files and ``extra`` (e.g. the digests of the checkpoints it starts from)."""
    d = cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)
    parts = [json.dumps(d, sort_keys=True, default=repr), f'seed={seed}', extra]
    parts.append(cached_digest(_ann_path(d.get('train_dataloader'))))
    ev = d.get('test_evaluator') or {}
    ev = ev[0] if isinstance(ev, list) and ev else ev
    parts.append(cached_digest(str(ev.get('ann_file', '')) if isinstance(ev, dict) else ''))
    return hashlib.sha256('\n'.join(parts).encode()).hexdigest()


# ---- runs and plans ----------------------------------------------------------------------------
@dataclass
class Run:
    """One training (+ evaluation) of the plan.

    ``name`` is the row it belongs to (``teacher``, ``student``, a method, ``pgm+ab``, a
    baseline such as ``student_n128``) or a cached helper (``cls_teacher``,
    ``student_init``...); ``role`` one of ``teacher``, ``cls_teacher``, ``student_init``,
    ``student`` (a plain detector row), ``distill``.
    """
    name: str
    role: str
    config: str  # the run's config file (written from ``cfg`` before it runs)
    seed: int
    options: List[str]
    work_dir: str
    key: str
    epochs: int
    iters_per_epoch: int = 0
    test_iters: int = 0
    cls_epochs: Optional[int] = None
    #: an already trained model to evaluate (and distil from) instead of training (teacher only)
    given_checkpoint: Optional[str] = None
    #: work dirs of the runs whose checkpoints this one needs (its teacher, its start)
    needs: List[str] = field(default_factory=list)
    #: the full config dict, written to ``config`` before the run starts
    cfg: Optional[dict] = None
    #: pixels per input image (for the default time estimate)
    pixels: int = DEFAULT_PIXELS

    @property
    def label(self) -> str:
        return self.name if self.role in ('teacher', 'cls_teacher', 'student_init') else \
            f'{self.name} seed {self.seed}'

    @property
    def final_checkpoint(self) -> str:
        if self.role == 'cls_teacher':
            return osp.join(self.work_dir, 'cls_teacher.pth')
        if self.given_checkpoint:
            return self.given_checkpoint
        suffix = '_student' if self.role == 'distill' else ''
        return osp.join(self.work_dir, f'epoch_{self.epochs}{suffix}.pth')

    @property
    def metrics_file(self) -> str:
        return osp.join(self.work_dir, 'metrics.json')

    def status(self) -> str:
        """'done', 'test' (trained, not evaluated), 'resume' (interrupted) or 'train'."""
        if self.role in ('cls_teacher', 'student_init'):
            return 'done' if osp.isfile(self.final_checkpoint) else (
                'resume' if self.role == 'student_init' and osp.isfile(
                    osp.join(self.work_dir, 'last_checkpoint')) else 'train')
        if osp.isfile(self.metrics_file):
            return 'done'
        if osp.isfile(self.final_checkpoint):
            return 'test'
        if osp.isfile(osp.join(self.work_dir, 'last_checkpoint')):
            return 'resume'
        return 'train'

    def metrics(self) -> Optional[dict]:
        if not osp.isfile(self.metrics_file):
            return None
        with open(self.metrics_file) as f:
            return json.load(f)

    def write_config(self) -> None:
        """Write ``cfg`` to ``config`` (atomically), before every training or test process:
        mmengine's Runner dumps its own copy of the config under the same name into the work
        dir, with its runtime additions."""
        if self.cfg is None:
            return
        write_config(self.cfg, self.config)


@dataclass
class Plan:
    """Every run of a benchmark and what the report says about its setup."""
    runs: List[Run]
    methods: List[str]  # rows besides teacher and student, in report order
    seeds: List[int]
    epochs: int
    work_dir: str
    data_root: str = ''
    extra_options: List[str] = field(default_factory=list)
    protocol: str = 'scratch'
    #: row name -> label shown in the report
    labels: Dict[str, str] = field(default_factory=dict)
    #: row name -> the plain row its gain is measured against
    baselines: Dict[str, str] = field(default_factory=dict)
    #: (method, reason) of every method that does not apply to the pair
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    #: row name -> notes on how the preset was applied
    notes: Dict[str, List[str]] = field(default_factory=dict)
    #: lines describing data, teacher, student, protocol
    setup: List[str] = field(default_factory=list)
    builtin: bool = True

    def by_role(self, role: str) -> List[Run]:
        return [r for r in self.runs if r.role == role]

    @property
    def teacher(self) -> Run:
        return self.by_role('teacher')[0]

    @property
    def rows(self) -> List[str]:
        return ['teacher', 'student'] + list(self.methods)


def split_method_options(options: Sequence[str], known: Optional[Sequence[str]] = None
                         ) -> Tuple[List[str], Dict[str, List[str]]]:
    """Split extra ``--cfg-options`` into those for every detector run and those prefixed
    ``METHOD:`` (``pgm:model.distill_losses.loss_gk.pgm.min_size=4``) for one row only;
    ``known`` are the valid prefixes (default: the built-in data's methods)."""
    if known is None:
        from .suite import METHODS
        known = list(METHODS)
    shared: List[str] = []
    per_method: Dict[str, List[str]] = {}
    for opt in options:
        head, sep, rest = opt.partition(':')
        if sep and '=' not in head and '.' not in head:
            if head not in known:
                raise ValueError(f'cfg option {opt!r}: unknown method {head!r} before ":"; '
                                 f'known: {", ".join(known)}')
            per_method.setdefault(head, []).append(rest)
        else:
            shared.append(opt)
    return shared, per_method


def shipped_status(path: str, train_ann: str, what: str = 'checkpoint') -> Tuple[bool, str]:
    """Whether a checkpoint shipped with the repo can serve for the data whose train annotation
    file is ``train_ann``: ``(usable, reason)``. It can when it exists and was trained on the
    same file (the sha256 stored in its ``meta['mmkd']['train_ann_sha256']``)."""
    from ..utils.checkpoint import checkpoint_meta, load_checkpoint_file
    full = osp.join(REPO_ROOT, path) if not osp.isabs(path) else path
    if not osp.isfile(full):
        return False, f'{path} is missing'
    meta = checkpoint_meta(load_checkpoint_file(full, what, mmap=True))
    want = (meta.get('mmkd') or {}).get('train_ann_sha256')
    if want is None:
        return False, f'{path} records no training-data fingerprint'
    if want != cached_digest(train_ann):
        return False, (f'{path} was trained on other data than {osp.dirname(train_ann)} '
                       '(annotation fingerprints differ)')
    return True, f'{path} (trained on this data set)'


def shipped_teacher_status(data_root: str, path: Optional[str] = None) -> Tuple[bool, str]:
    """:func:`shipped_status` of the shipped synthetic teacher for the built-in data in
    ``data_root``."""
    from .suite import SHIPPED_TEACHER
    return shipped_status(path or SHIPPED_TEACHER,
                          osp.join(data_root, 'annotations', 'instances_train.json'), 'teacher')


# ---- time estimates ----------------------------------------------------------------------------
class Timings:
    """Measured seconds per training iteration per method, kept in ``<work_dir>/timings.json``
    for the next invocation's estimate, and a live correction factor for this one.

    Without a measurement, a run's rate is :data:`DEFAULT_SEC_PER_ITER` scaled by its image
    size (pixels / 160 x 160) and, when ``single_thread_lanes``, by :data:`LANE_SLOWDOWN`."""

    def __init__(self, work_dir: str, single_thread_lanes: bool = False) -> None:
        self.path = osp.join(work_dir, 'timings.json')
        self.slowdown = LANE_SLOWDOWN if single_thread_lanes else 1.0
        self.measured: Dict[str, float] = {}
        if osp.isfile(self.path):
            with open(self.path) as f:
                self.measured = json.load(f)
        self.factor = 1.0
        self._ratios: List[float] = []

    def sec_per_iter(self, run: Run) -> float:
        if run.name in self.measured:
            return self.measured[run.name]
        from .presets import base_method
        name = base_method(run.name)
        default = DEFAULT_SEC_PER_ITER.get(name, DEFAULT_SEC_PER_ITER.get(run.role, 0.4))
        size = max(0.05, run.pixels / DEFAULT_PIXELS)
        return default * size * self.slowdown * self.factor

    def estimate(self, run: Run, status: Optional[str] = None) -> float:
        """Seconds ``run`` still needs (0 when done)."""
        status = status or run.status()
        if status == 'done':
            return 0.0
        spi = self.sec_per_iter(run)
        if run.role == 'cls_teacher':
            return STARTUP_SECONDS + 60.0 * self.factor
        test = 0.0 if run.role == 'student_init' else STARTUP_SECONDS + 0.5 * spi * run.test_iters
        if status == 'test':
            return test
        left = run.epochs
        if status == 'resume':
            left = max(0, run.epochs - _last_epoch(run.work_dir))
        return STARTUP_SECONDS + spi * run.iters_per_epoch * left + test

    def record(self, run: Run, seconds: float, epochs_trained: int) -> None:
        iters = run.iters_per_epoch * epochs_trained
        if run.role == 'cls_teacher' or iters <= 0:
            return
        spi = max(1e-4, (seconds - STARTUP_SECONDS) / iters)
        guess = self.sec_per_iter(run)
        self._ratios.append(spi / guess if guess else 1.0)
        self.factor = sum(self._ratios) / len(self._ratios)
        self.measured[run.name] = spi
        os.makedirs(osp.dirname(self.path), exist_ok=True)
        _write_json(self.path, self.measured)


def _last_epoch(work_dir: str) -> int:
    """The epoch of the checkpoint ``last_checkpoint`` points at (0 if unknown)."""
    try:
        with open(osp.join(work_dir, 'last_checkpoint')) as f:
            name = osp.basename(f.read().strip())
        return int(name.split('_')[1].split('.')[0])
    except (OSError, IndexError, ValueError):
        return 0


def short_path(path: str) -> str:
    """``path`` relative to the current directory when inside it, else absolute."""
    rel = osp.relpath(path)
    return path if rel.startswith('..') else rel


def fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f'{s // 3600}h{s % 3600 // 60:02d}m' if s >= 3600 else f'{s // 60}m{s % 60:02d}s'


# ---- subprocesses ------------------------------------------------------------------------------
def python_exe() -> str:
    return sys.executable


def _stream(cmd: List[str], log_path: str,
            on_line: Optional[Callable[[str], None]] = None,
            env_extra: Optional[Dict[str, str]] = None) -> int:
    """Run ``cmd`` in the checkout, appending its output to ``log_path``; returns its exit
    code. ``on_line`` sees every output line (for progress); ``env_extra`` is added to the
    environment."""
    env = dict(os.environ)
    env['PYTHONUNBUFFERED'] = '1'  # the child's log lines arrive as written (progress)
    env.update(env_extra or {})
    env['PYTHONPATH'] = REPO_ROOT + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH')
                                     else '')
    os.makedirs(osp.dirname(log_path), exist_ok=True)
    with open(log_path, 'a') as log:
        log.write(f'\n$ {" ".join(cmd)}\n')
        log.flush()
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if on_line:
                on_line(line)
        return proc.wait()


class RunFailed(RuntimeError):
    pass


def _tail(path: str, n: int = 40) -> str:
    try:
        with open(path) as f:
            return ''.join(f.readlines()[-n:])
    except OSError:
        return ''


def _options(run: Run) -> List[str]:
    return ['--cfg-options', *run.options] if run.options else []


def train_command(run: Run, resume: bool) -> List[str]:
    if run.role == 'cls_teacher':
        cmd = [python_exe(), 'tools/train_cls_teacher.py', run.config, '--work-dir', run.work_dir]
        if run.cls_epochs is not None:
            cmd += ['--epochs', str(run.cls_epochs)]
        return cmd + _options(run)
    cmd = [python_exe(), 'tools/train.py', run.config, '--work-dir', run.work_dir]
    if resume:
        cmd.append('--resume')
    return cmd + _options(run)


def test_command(run: Run) -> List[str]:
    return [python_exe(), 'tools/test.py', run.config, run.final_checkpoint, '--work-dir',
            osp.join(run.work_dir, 'test'), *_options(run)]


def _write_json(path: str, obj) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, indent=1, sort_keys=True)


def read_test_metrics(test_dir: str, stdout_text: str = '') -> dict:
    """COCO metrics of the newest ``tools/test.py`` run in ``test_dir``: from the
    ``<timestamp>/<timestamp>.json`` file mmengine writes, else from the metrics dict
    tools/test.py prints last."""
    found = sorted(glob.glob(osp.join(test_dir, '*', '*.json')),
                   key=lambda p: osp.basename(osp.dirname(p)))
    for path in reversed(found):
        if osp.basename(path)[:-5] != osp.basename(osp.dirname(path)):
            continue  # not mmengine's <ts>/<ts>.json
        with open(path) as f:
            lines = [ln for ln in f.read().splitlines() if ln.strip()]
        for ln in reversed(lines):
            data = json.loads(ln)
            if METRIC_KEYS[0] in data:
                return {k: data[k] for k in METRIC_KEYS if k in data}
    for ln in reversed(stdout_text.splitlines()):
        ln = ln.strip()
        if ln.startswith('{') and METRIC_KEYS[0] in ln:
            data = ast.literal_eval(ln)
            return {k: data[k] for k in METRIC_KEYS if k in data}
    if EMPTY_RESULTS in stdout_text:  # the model detected nothing at all: AP 0, said so
        return dict({k: 0.0 for k in METRIC_KEYS}, no_detections=True)
    raise RunFailed(f'no COCO metrics found in {test_dir} (tools/test.py output changed?)')


def _print_flush(text: str) -> None:
    print(text, flush=True)  # progress must show at once, also when stdout is a file


def default_jobs() -> int:
    """Runs trained side by side by default: 1 with a GPU (runs would share it), else 2 when
    there are at least 2 CPU cores (measured on 2 cores: two 1-thread trainings side by side
    finish ~1.7x more iterations per second than one 2-thread training)."""
    try:
        import torch
        if torch.cuda.is_available():
            return 1
    except ImportError:  # pragma: no cover
        pass
    return 2 if (os.cpu_count() or 1) >= 2 else 1


class Executor:
    """Runs a plan's unfinished runs, ``jobs`` at a time (a run starts once the teacher it
    needs is finished), printing progress with elapsed time and ETA.

    With ``jobs`` > 1 every subprocess gets ``OMP_NUM_THREADS`` = cores // jobs (unless the
    caller set it), so side-by-side runs do not oversubscribe the cores.
    """

    def __init__(self, plan: Plan, printer: Callable[[str], None] = _print_flush,
                 keep_going: bool = False, progress_every: float = 30.0, jobs: int = 1) -> None:
        if jobs < 1:
            raise ValueError('--jobs must be at least 1')
        self.plan = plan
        self._print = printer
        self._lock = threading.Lock()
        self.keep_going = keep_going
        self.progress_every = progress_every
        self.jobs = jobs
        self.failed: List[Tuple[Run, str]] = []
        self.env: Dict[str, str] = {}
        if jobs > 1 and 'OMP_NUM_THREADS' not in os.environ:
            threads = str(max(1, (os.cpu_count() or 1) // jobs))
            self.env = {'OMP_NUM_THREADS': threads, 'MKL_NUM_THREADS': threads}
        one_thread = self.env.get('OMP_NUM_THREADS', os.environ.get('OMP_NUM_THREADS')) == '1'
        self.timings = Timings(plan.work_dir, single_thread_lanes=jobs > 1 and one_thread)

    def print(self, text: str) -> None:
        with self._lock:
            self._print(text)

    def remaining(self, runs: Sequence[Run]) -> float:
        """Estimated wall seconds for ``runs``, shared over the parallel lanes."""
        return sum(self.timings.estimate(r) for r in runs) / min(self.jobs, max(1, len(runs)))

    def describe(self) -> List[str]:
        """One line per run: status and estimated time, then the total."""
        lines = []
        for i, r in enumerate(self.plan.runs, 1):
            st = r.status()
            est = self.timings.estimate(r, st)
            what = {'done': 'done, skipped', 'test': 'trained; evaluate only',
                    'resume': f'resume from epoch {_last_epoch(r.work_dir)}',
                    'train': 'train' if r.role in ('cls_teacher', 'student_init')
                    else 'train + evaluate'}[st]
            if st == 'test' and r.given_checkpoint:
                what = 'given checkpoint; evaluate'
            idx = f'[{i}/{len(self.plan.runs)}]'
            lines.append(f'  {idx:<8} {r.label:<20} {what:<26} '
                         f'~{fmt_seconds(est):>7}  {short_path(r.work_dir)}')
        lanes = f', {self.jobs} runs side by side' if self.jobs > 1 else ''
        lines.append(f'  estimated time: {fmt_seconds(self.remaining(self.plan.runs))}{lanes} '
                     f'({"measured" if self.timings.measured else "default"} rates; '
                     'refined as runs finish)')
        return lines

    def run_all(self) -> bool:
        """Train and evaluate every unfinished run; True when all of them are done.

        Runs start in plan order as lanes free up; a run waits for the runs it ``needs``
        (its teacher) and is skipped when one of them failed.
        """
        t_start = time.time()
        runs = self.plan.runs
        index = {id(r): i for i, r in enumerate(runs, 1)}
        by_dir = {r.work_dir: r for r in runs}
        todo = [r for r in runs if r.status() != 'done']
        finished: Dict[str, bool] = {r.work_dir: True for r in runs if r not in todo}
        active: Dict[str, threading.Thread] = {}
        cond = threading.Condition()
        stop = [False]

        def work(run: Run, st: str, later: List[Run]) -> None:
            ok = True
            try:
                self._do(run, st, t_start, later)
            except RunFailed as exc:
                ok = False
                self.failed.append((run, str(exc)))
                self.print(f'[{index[id(run)]}/{len(runs)}] {run.label}: FAILED\n{exc}')
            except Exception as exc:  # a bug here must not hang the other lanes
                ok = False
                self.failed.append((run, repr(exc)))
                self.print(f'[{index[id(run)]}/{len(runs)}] {run.label}: FAILED ({exc!r})')
            with cond:
                finished[run.work_dir] = ok
                active.pop(run.work_dir, None)
                if not ok and not self.keep_going:
                    stop[0] = True
                cond.notify_all()

        with cond:
            while todo or active:
                if stop[0]:
                    todo.clear()
                started = False
                for run in list(todo):
                    if len(active) >= self.jobs:
                        break
                    deps = [d for d in run.needs if d in by_dir]
                    if any(finished.get(d) is False for d in deps) or (
                            not deps and self._missing_teacher(run)):
                        todo.remove(run)
                        finished[run.work_dir] = False
                        missing = self._missing_teacher(run) or 'teacher'
                        self.failed.append((run, f'teacher checkpoint {missing} missing'))
                        self.print(f'[{index[id(run)]}/{len(runs)}] {run.label}: skipped, its '
                                   'teacher failed')
                        started = True
                        continue
                    if not all(finished.get(d) for d in deps):
                        continue  # its teacher is still training: try the next run
                    todo.remove(run)
                    st = run.status()
                    eta = self.remaining(todo + [run]) + 0.0
                    self.print(f'[{index[id(run)]}/{len(runs)}] {run.label}: '
                               f'{"evaluating" if st == "test" else "training"}... (elapsed '
                               f'{fmt_seconds(time.time() - t_start)}, ETA {fmt_seconds(eta)})')
                    th = threading.Thread(target=work, args=(run, st, todo), daemon=True)
                    active[run.work_dir] = th
                    th.start()
                    started = True
                if not started:
                    if not active:  # nothing runnable and nothing running: unmet needs
                        for run in todo:
                            self.failed.append((run, 'its teacher is not part of the plan'))
                        break
                    cond.wait()
        return not self.failed

    def _missing_teacher(self, run: Run) -> Optional[str]:
        """The teacher checkpoint a run distils from when it is missing (None otherwise)."""
        model = (run.cfg or {}).get('model') or {}
        path = model.get('teacher_ckpt') if isinstance(model, dict) else None
        if run.role == 'distill' and isinstance(path, str) and '://' not in path:
            return None if osp.isfile(path) else path
        return None

    def _do(self, run: Run, status: str, t_start: float, later: Sequence[Run]) -> None:
        os.makedirs(run.work_dir, exist_ok=True)
        run.write_config()
        _write_json(osp.join(run.work_dir, 'run.json'),
                    {k: v for k, v in asdict(run).items() if k != 'cfg'})
        log = osp.join(run.work_dir, 'benchmark.log')
        state_path = osp.join(run.work_dir, 'train_time.json')
        state = {'seconds': 0.0}
        if osp.isfile(state_path):
            with open(state_path) as f:
                state = json.load(f)
        if status in ('train', 'resume'):
            first_epoch = _last_epoch(run.work_dir) if status == 'resume' else 0
            t0 = time.time()
            rc = _stream(train_command(run, status == 'resume'), log,
                         self._progress(run, t_start, t0, later), self.env)
            dt = time.time() - t0
            state['seconds'] = state.get('seconds', 0.0) + dt
            state['threads'] = self.env.get('OMP_NUM_THREADS', 'default')
            _write_json(state_path, state)
            if rc != 0 or not osp.isfile(run.final_checkpoint):
                raise RunFailed(f'training exited with {rc}; log {log}; it resumes on the next '
                                f'invocation. Last lines:\n{_tail(log)}')
            with self._lock:
                self.timings.record(run, dt, run.epochs - first_epoch)
        if run.role == 'student_init':
            self.print(f'      {run.label}: trained ({run.epochs} epochs)')
            return
        if run.role == 'cls_teacher':
            info = osp.join(run.work_dir, 'metrics.json')
            if osp.isfile(info):
                with open(info) as f:
                    top1 = json.load(f).get('top1', float('nan'))
                self.print(f'      {run.label}: val crop top-1 {100 * top1:.1f} %')
            return
        t0 = time.time()
        lines: List[str] = []
        run.write_config()
        rc = _stream(test_command(run), log, lines.append, self.env)
        if rc != 0:
            raise RunFailed(f'tools/test.py exited with {rc}; log {log}. Last lines:\n'
                            f'{_tail(log)}')
        metrics = read_test_metrics(osp.join(run.work_dir, 'test'), ''.join(lines))
        if metrics.get('no_detections'):
            self.print(f'      {run.label}: detected nothing on the val set (AP 0)')
        metrics.update(train_seconds=round(state.get('seconds', 0.0), 1),
                       test_seconds=round(time.time() - t0, 1), key=run.key, seed=run.seed,
                       name=run.name, epochs=run.epochs)
        if run.given_checkpoint:
            metrics['checkpoint'] = run.given_checkpoint
        _write_json(run.metrics_file, metrics)
        ap = metrics.get(METRIC_KEYS[0], float('nan')) * 100
        train = fmt_seconds(metrics['train_seconds'])
        self.print(f'      {run.label}: AP {ap:.1f} (train {train})')

    def _progress(self, run: Run, t_start: float, t_run: float,
                  later: Sequence[Run]) -> Callable[[str], None]:
        import re
        pat = re.compile(r'Epoch\(train\)\s*\[(\d+)\]\s*\[\s*(\d+)/(\d+)\]')
        last = [time.time()]

        def on_line(line: str) -> None:
            m = pat.search(line)
            if not m or time.time() - last[0] < self.progress_every:
                return
            last[0] = time.time()
            ep, it, n = (int(g) for g in m.groups())
            done = (ep - 1 + it / max(n, 1)) / max(run.epochs, 1)
            run_left = (time.time() - t_run) * (1 - done) / max(done, 1e-6)
            eta = run_left / self.jobs + self.remaining(list(later))
            self.print(f'      {run.label}: epoch {ep}/{run.epochs} iter {it}/{n} (elapsed '
                       f'{fmt_seconds(time.time() - t_start)}, ETA {fmt_seconds(eta)})')
        return on_line


def ensure_data(data_root: str, printer: Callable[[str], None] = print) -> None:
    """Generate the built-in synthetic data set in ``data_root`` when it is missing."""
    ann = osp.join(data_root, 'annotations', 'instances_train.json')
    if osp.isfile(ann):
        return
    printer(f'generating the synthetic data set in {data_root} '
            '(python tools/make_synthetic_data.py)...')
    rc = subprocess.call([python_exe(), 'tools/make_synthetic_data.py', osp.abspath(data_root)],
                         cwd=REPO_ROOT)
    if rc != 0 or not osp.isfile(ann):
        raise RuntimeError(f'could not generate the data in {data_root}; run '
                           f'python tools/make_synthetic_data.py {data_root} and check its errors')
