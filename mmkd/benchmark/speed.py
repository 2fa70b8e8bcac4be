"""Per-step cost of each method against the plain student, measured in one process.

For each method a DistillDetector is built from its synthetic config (random teacher unless a
checkpoint is given: the cost does not depend on the weights) together with a copy of its
student as the plain baseline; both train with SGD on the same real batches, steps interleaved
(plain, distilled, plain, ...) so machine load hits both alike. During the distilled steps,
forward hooks time

* the teacher: every call into its top two module levels (backbone, neck, heads and their
  direct parts: RoI extractor, box head, ...), counted once when nested;
* the distillation losses: each ``distill_losses`` module's forward, minus the teacher time
  spent inside it (the teacher runs lazily, from the first loss that needs it).

What is left of the extra time is the backward and update of the distillation branch
(adapters, learned modules) plus the recording of the student's intermediate outputs.
"""
from __future__ import annotations

import copy
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..apis.benchmark import real_batches, timed_train_step
from .report import replace_section
from .runs import load_resolved, parse_options
from .suite import METHODS

SPEED_BEGIN, SPEED_END = '<!-- speed:BEGIN -->', '<!-- speed:END -->'
MEMORY_BEGIN, MEMORY_END = '<!-- memory:BEGIN -->', '<!-- memory:END -->'


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class CallTimer:
    """Time of the outermost forward calls into ``modules`` (nested calls count once).

    ``inner``: another timer whose time spent during these calls is subtracted (the teacher
    inside a distillation loss). On a CUDA device the calls are bracketed by CUDA events, so
    timing does not synchronise (and slow) the step; read :attr:`total` after the step ended
    with a synchronisation (``timed_train_step`` does). On the CPU: wall time."""

    def __init__(self, modules: Sequence[nn.Module], inner: Optional['CallTimer'] = None,
                 events: Optional[bool] = None) -> None:
        self.inner = inner
        self.events = torch.cuda.is_available() if events is None else bool(events)
        self._depth = 0
        self._t0 = 0.0
        self._inner0 = 0.0
        self._open: Optional[tuple] = None
        self._handles = []
        self.reset()
        for m in modules:
            self._handles.append(m.register_forward_pre_hook(self._pre))
            self._handles.append(m.register_forward_hook(self._post))

    def reset(self) -> None:
        """Forget the calls timed so far."""
        self._wall = 0.0
        #: CUDA mode: (start event, end event, first and last+1 index of ``inner``'s spans
        #: recorded during the call)
        self._spans: List[tuple] = []

    def _pre(self, *_) -> None:
        if self._depth == 0:
            if self.events:
                start = torch.cuda.Event(enable_timing=True)
                start.record()
                self._open = (start, len(self.inner._spans) if self.inner else 0)
            else:
                _sync()
                self._t0 = time.perf_counter()
                self._inner0 = self.inner.total if self.inner else 0.0
        self._depth += 1

    def _post(self, *_) -> None:
        self._depth -= 1
        if self._depth == 0:
            if self.events:
                end = torch.cuda.Event(enable_timing=True)
                end.record()
                start, lo = self._open
                self._spans.append((start, end, lo, len(self.inner._spans) if self.inner else 0))
                return
            _sync()
            spent = time.perf_counter() - self._t0
            if self.inner:
                spent -= self.inner.total - self._inner0
            self._wall += spent

    @property
    def total(self) -> float:
        """Seconds spent in the timed calls since the last :meth:`reset`."""
        if not self.events:
            return self._wall
        t = 0.0
        for start, end, lo, hi in self._spans:
            t += start.elapsed_time(end) / 1e3
            if self.inner:
                t -= sum(a.elapsed_time(b) for a, b, *_ in self.inner._spans[lo:hi]) / 1e3
        return t

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def teacher_modules(teacher: nn.Module) -> List[nn.Module]:
    """The teacher's children and grandchildren: every teacher computation goes through them."""
    mods = []
    for child in teacher.children():
        mods.append(child)
        mods.extend(child.children())
    return mods


@contextmanager
def step_timers(model: nn.Module,
                events: Optional[bool] = None) -> Iterator[Dict[str, CallTimer]]:
    """Timers on a DistillDetector's teacher and distillation losses (removed on exit);
    ``events``: CUDA events (default: where CUDA is available) or wall time."""
    teacher = CallTimer(teacher_modules(model.teacher), events=events)
    losses = CallTimer(list(model.distill_losses.values()), inner=teacher, events=events)
    try:
        yield {'teacher': teacher, 'losses': losses}
    finally:
        teacher.remove()
        losses.remove()


def interleaved_steps(kd: nn.Module, plain: nn.Module, optims: Dict[str, Any],
                      batches: Sequence[dict], warmup: int, scalers: Dict[str, Any],
                      cuda: bool) -> Tuple[Dict[str, List[float]], Dict[str, float]]:
    """Alternate a plain-student step and a distilled step on each batch, in one process.

    Args:
        kd / plain: the DistillDetector and a copy of its student, on the device.
        optims / scalers: ``{'plain': ..., 'kd': ...}`` optimisers and GradScalers (None: fp32).
        batches: one batch per iteration (the first ``warmup`` are not timed).
        cuda: the models are on a CUDA device: the teacher and loss parts are timed with CUDA
            events and peak memory is measured; otherwise wall time and no memory.

    Returns:
        ``times``: seconds per timed step, ``'plain'`` and ``'kd'``, and the distilled step's
        ``'teacher'`` forward and distillation ``'losses'`` (teacher excluded);
        ``mem`` (CUDA only): MiB per model, the step's peak allocation above what was
        allocated before it plus the model's own persistent tensors (weights, gradients,
        optimizer state; the teacher's weights for ``'kd'``), so the other model held in the
        same process does not count.
    """
    models = {'plain': plain, 'kd': kd}
    times: Dict[str, List[float]] = {'plain': [], 'kd': [], 'teacher': [], 'losses': []}
    mem: Dict[str, float] = {}
    with step_timers(kd, events=cuda) as timers:
        for i, batch in enumerate(batches):
            for key in ('plain', 'kd'):
                model, opt = models[key], optims[key]
                for t in timers.values():
                    t.reset()
                if cuda:
                    torch.cuda.synchronize()
                    before = torch.cuda.memory_allocated()
                    torch.cuda.reset_peak_memory_stats()
                dt = timed_train_step(model, opt, batch, scalers[key])
                if i < warmup:
                    continue
                times[key].append(dt)
                if key == 'kd':
                    times['teacher'].append(timers['teacher'].total)
                    times['losses'].append(timers['losses'].total)
                if cuda:
                    own = tensor_bytes(model, opt) + (tensor_bytes(model.teacher)
                                                      if key == 'kd' else 0)
                    peak = torch.cuda.max_memory_allocated() - before + own
                    mem[key] = max(mem.get(key, 0.0), peak / 2**20)
    return times, mem


@dataclass
class SpeedResult:
    method: str
    precision: str
    plain_ms: float = float('nan')
    distilled_ms: float = float('nan')
    teacher_share: float = float('nan')  # of the distilled step
    loss_share: float = float('nan')  # distillation-loss forward, teacher excluded
    extra_share: float = float('nan')  # (distilled - plain) over distilled, summed over steps
    plain_mem_mib: Optional[float] = None
    distilled_mem_mib: Optional[float] = None
    #: CPU only: peak resident memory of a process training only the plain student / only the
    #: distilled model, and its growth over the RSS once model and batches are built (MiB)
    cpu_mem: Dict[str, float] = field(default_factory=dict)
    pgm: Dict[str, float] = field(default_factory=dict)
    error: str = ''

    @property
    def ratio(self) -> float:
        return self.distilled_ms / self.plain_ms


def _grad_scaler():
    """A CUDA GradScaler (``torch.amp`` spelling where it exists; see torch_compat)."""
    from ..utils.torch_compat import cuda_grad_scaler
    return cuda_grad_scaler()


def _pgm_losses(model) -> List[nn.Module]:
    from ..models.methods.global_knowledge import RobustDistillingModule
    return [l for l in model.distill_losses.values() if isinstance(l, RobustDistillingModule)]


def prepare_pgm(model, cfg, iters_per_epoch: int) -> Dict[str, float]:
    """Give a GK model's losses their prototypes (as training would before the first step) and
    time it: the offline pass (first epoch and a later one, teacher descriptors cached) or the
    online refresh from a full memory bank. Seconds, plus ``iters_per_epoch``."""
    from mmengine.logging import MessageHub

    from ..models.methods.global_knowledge import PGMHook
    losses = _pgm_losses(model)
    if not losses:
        return {}
    hub = MessageHub.get_current_instance()
    hub.update_info('epoch', 0)
    hub.update_info('max_epochs', cfg.train_cfg.get('max_epochs', 12))
    hook_cfg = next((h for h in cfg.get('custom_hooks', []) if h['type'] == 'PGMHook'), {})
    hook = PGMHook(batch_size=hook_cfg.get('batch_size', 4))
    runner_like = SimpleNamespace(cfg=cfg)
    loss = losses[0]
    out: Dict[str, float] = {'iters_per_epoch': float(iters_per_epoch)}
    t0 = time.perf_counter()
    desc = hook.collect(runner_like, model, loss)
    collect_s = time.perf_counter() - t0
    if loss.pgm_cfg['mode'] == 'offline':
        t0 = time.perf_counter()
        loss.generate_prototypes(*desc)
        out['offline_first_s'] = collect_s + time.perf_counter() - t0
        t0 = time.perf_counter()
        loss.generate_prototypes(*hook.collect(runner_like, model, loss))
        out['offline_later_s'] = time.perf_counter() - t0
    else:
        loss._bank_push(*desc[:2], desc[2][0])  # a full bank, as at the end of an epoch
        loss.train()
        t0 = time.perf_counter()
        loss.refresh_from_bank()
        out['online_refresh_s'] = time.perf_counter() - t0
    return out


def measure_method(name: str, options: Sequence[str] = (), iters: int = 10, warmup: int = 2,
                   amp: bool = False, teacher_ckpt: Optional[str] = None) -> SpeedResult:
    """Time the plain student and the ``name`` method's distilled step side by side."""
    from mmdet.registry import MODELS
    from mmengine.runner import Runner
    spec = METHODS[name]
    if spec.role != 'distill':
        raise ValueError(f'{name!r} is not a distillation method')
    res = SpeedResult(name, 'AMP fp16' if amp else 'fp32')
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if amp and device != 'cuda':
        raise RuntimeError('AMP timing needs a CUDA device; drop --precision amp on this '
                           'machine')
    cfg = load_resolved(spec.config, list(spec.cfg_options) + list(options))
    cfg.model.teacher_ckpt = teacher_ckpt
    torch.manual_seed(0)
    kd = MODELS.build(cfg.model).to(device).train()
    plain = copy.deepcopy(kd.student).to(device).train()
    iters_per_epoch = len(Runner.build_dataloader(cfg.train_dataloader, seed=0))
    res.pgm = prepare_pgm(kd, cfg, iters_per_epoch)
    kd.train()
    opt_kd = torch.optim.SGD(kd.parameters(), lr=1e-4, momentum=0.9)
    opt_plain = torch.optim.SGD(plain.parameters(), lr=1e-4, momentum=0.9)
    scalers = {k: _grad_scaler() if amp else None for k in ('plain', 'kd')}
    batches = real_batches(cfg.train_dataloader, warmup + iters)
    times, mem = interleaved_steps(kd, plain, dict(plain=opt_plain, kd=opt_kd), batches, warmup,
                                   scalers, cuda=device == 'cuda')
    res.plain_ms = 1e3 * statistics.median(times['plain'])
    res.distilled_ms = 1e3 * statistics.median(times['kd'])
    total_kd = sum(times['kd'])
    res.teacher_share = sum(times['teacher']) / total_kd
    res.loss_share = sum(times['losses']) / total_kd
    res.extra_share = (total_kd - sum(times['plain'])) / total_kd
    if mem:
        res.plain_mem_mib, res.distilled_mem_mib = mem['plain'], mem['kd']
    return res


def _rss_mib() -> float:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    return float('nan')


def _memory_child(name: str, options: Sequence[str], which: str, steps: int, out) -> None:
    """Train ``steps`` steps of only the plain student or only the distilled model in a fresh
    process; put (RSS after building model and batches, peak RSS) in MiB on ``out``."""
    import resource

    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import mmkd  # noqa: F401
    from ..apis import student_model_cfg
    try:
        register_all_modules()
        spec = METHODS[name]
        cfg = load_resolved(spec.config, list(spec.cfg_options) + list(options))
        cfg.model.teacher_ckpt = None
        torch.manual_seed(0)
        model_cfg = cfg.model if which == 'kd' else student_model_cfg(cfg)
        model = MODELS.build(model_cfg).train()
        if which == 'kd':
            prepare_pgm(model, cfg, 1)
            model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        batches = real_batches(cfg.train_dataloader, steps)
        built = _rss_mib()
        for batch in batches:
            timed_train_step(model, opt, batch)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        out.put((built, peak))
    except Exception as exc:  # reported by the parent
        out.put(f'{type(exc).__name__}: {exc}')


def measure_cpu_memory(name: str, options: Sequence[str] = (), steps: int = 4) -> Dict[str, float]:
    """Peak RSS of training the plain student vs the ``name`` distilled model, each alone in
    a fresh (spawned) process, and the growth of each over its RSS after building (the
    training step's working memory plus optimizer state). On the CPU there is no allocator
    counter like CUDA's ``max_memory_allocated``; separate processes keep the two apart."""
    import multiprocessing as mp
    ctx = mp.get_context('spawn')
    out = {}
    for which in ('plain', 'kd'):
        q = ctx.Queue()
        proc = ctx.Process(target=_memory_child, args=(name, list(options), which, steps, q))
        proc.start()
        res = q.get()
        proc.join()
        if isinstance(res, str):
            raise RuntimeError(f'memory measurement of {name} ({which}) failed: {res}')
        built, peak = res
        out[f'{which}_peak'] = peak
        out[f'{which}_growth'] = peak - built
    return out


def memory_text(r: SpeedResult) -> str:
    """The peak-memory cell: CUDA peak allocated, or on the CPU peak RSS and step growth."""
    if r.plain_mem_mib:
        return (f'{r.plain_mem_mib:.0f} / {r.distilled_mem_mib:.0f} MiB '
                f'({r.distilled_mem_mib / r.plain_mem_mib:.2f}x)')
    m = r.cpu_mem
    if not m:
        return 'not measured'
    return (f'RSS {m["plain_peak"]:.0f} / {m["kd_peak"]:.0f} MiB '
            f'({m["kd_peak"] / m["plain_peak"]:.2f}x); training growth {m["plain_growth"]:.0f}'
            f' / {m["kd_growth"]:.0f} MiB ({m["kd_growth"] / max(m["plain_growth"], 1e-6):.2f}x)')


def pgm_epoch_text(res: SpeedResult) -> str:
    """The PGM cost as a share of a distilled epoch (iterations x median distilled step)."""
    p = res.pgm
    if not p:
        return '—'
    epoch = p['iters_per_epoch'] * res.distilled_ms / 1e3
    if 'offline_later_s' in p:
        later, first = p['offline_later_s'], p['offline_first_s']
        return (f'offline pass {later:.1f} s = {later / (later + epoch):.1%} of a later epoch '
                f'(first: {first:.1f} s = {first / (first + epoch):.1%})')
    ref = p['online_refresh_s']
    return (f'online refresh {ref:.2f} s = {ref / (ref + epoch):.1%} of an epoch (bank '
            'updates are inside the step time)')


def speed_table(results: Sequence[SpeedResult]) -> str:
    lines = ['| method | precision | plain step (ms) | distilled step (ms) | ratio | teacher '
             'forward | distill losses (fwd) | rest of the extra | peak memory plain / '
             'distilled | PGM cost per epoch |', '|' + '---|' * 10]
    for r in results:
        if r.error:
            lines.append(f'| {r.method} | {r.precision} | failed: {r.error} |' + ' |' * 7)
            continue
        rest = r.extra_share - r.teacher_share - r.loss_share
        mem = memory_text(r)
        lines.append(f'| {r.method} | {r.precision} | {r.plain_ms:.0f} | {r.distilled_ms:.0f} | '
                     f'**{r.ratio:.2f}x** | {r.teacher_share:.0%} | {r.loss_share:.0%} | '
                     f'{rest:.0%} | {mem} | {pgm_epoch_text(r)} |')
    return '\n'.join(lines)


def speed_section(results: Sequence[SpeedResult], command: str, device: str, batch: int,
                  iters: int, warmup: int, date: str) -> str:
    return '\n'.join([
        '## Step time of every method (tools/benchmark_speed.py)', '',
        f'Measured on {date}, {device}, batch {batch}, median of {iters} timed steps after '
        f'{warmup} warm-up, plain and distilled steps interleaved in one process. The shares '
        'are of the distilled step: the teacher\'s forward, the distillation losses\' forward '
        '(teacher excluded), and the rest of the extra time over the plain step (backward and '
        'update of the distillation branch, recording the student\'s outputs; summed over the '
        'timed steps, so it can be slightly negative when the machine is noisy). Peak memory: '
        'on CUDA the peak allocated memory of the plain and the distilled step; on the CPU, '
        'where no such counter exists, each model trains a few steps alone in a fresh process '
        'and the table gives its peak resident memory (RSS, including the ~0.5 GiB of torch and '
        'mmdet) and the growth of the RSS during training over the RSS once model and batches '
        'are built (the step\'s working memory plus optimizer state). Random teacher weights: '
        'the cost does not depend on them.', '',
        '```', command, '```', '', speed_table(results), ''])


def write_speed_section(doc_path: str, body: str) -> None:
    replace_section(doc_path, body, SPEED_BEGIN, SPEED_END)


def memory_section(results: Sequence[SpeedResult], command: str, device: str, steps: int,
                   date: str) -> str:
    """The CPU peak-memory table of ``--memory-only`` (no timing)."""
    lines = ['| method | peak RSS plain (MiB) | peak RSS distilled (MiB) | ratio | training '
             'growth plain (MiB) | training growth distilled (MiB) | ratio |', '|' + '---|' * 7]
    for r in results:
        m = r.cpu_mem
        if r.error or not m:
            lines.append(f'| {r.method} | failed: {r.error or "not measured"} |' + ' |' * 5)
            continue
        lines.append(f'| {r.method} | {m["plain_peak"]:.0f} | {m["kd_peak"]:.0f} | '
                     f'**{m["kd_peak"] / m["plain_peak"]:.2f}x** | {m["plain_growth"]:.0f} | '
                     f'{m["kd_growth"]:.0f} | '
                     f'{m["kd_growth"] / max(m["plain_growth"], 1e-6):.2f}x |')
    return '\n'.join([
        '## Peak memory of every method on the CPU (tools/benchmark_speed.py --memory-only)', '',
        f'Measured on {date}, {device}. Each model (the plain student, then the distilled '
        f'model with its teacher) trains {steps} steps alone in a fresh spawned process. Peak '
        'RSS is the process\'s maximum resident memory, torch and mmdet included; the training '
        'growth is that peak minus the RSS once model and batches are built, i.e. the working '
        'memory of the steps plus the optimizer state. RSS also counts memory the allocator '
        'keeps after freeing it, so small differences are noise.', '',
        '```', command, '```', '', '\n'.join(lines), ''])


def write_memory_section(doc_path: str, body: str) -> None:
    replace_section(doc_path, body, MEMORY_BEGIN, MEMORY_END)


# ---- COCO-size step cost on a GPU (tools/benchmark_speed.py --coco) ------------------------
GPU_SPEED_BEGIN, GPU_SPEED_END = '<!-- gpu-speed:BEGIN -->', '<!-- gpu-speed:END -->'
#: The pairs ``--coco`` measures: name -> (config path prefix under configs/kd, label).
COCO_PAIRS: Dict[str, Tuple[str, str]] = {
    'faster_rcnn': ('configs/kd/faster_rcnn_r101_r50_', 'Faster R-CNN R101 -> R50'),
    'retinanet': ('configs/kd/retinanet_r101_r50_', 'RetinaNet R101 -> R50'),
}
#: Extra rows: the online-PGM variant of each pair's Global Knowledge config.
COCO_VARIANTS = {'pgm_online': ('pgm', ('model.distill_losses.loss_gk.pgm.mode=online', ))}
#: The issue's targets: GK's distilled step at most this many plain steps; every method's time
#: beyond the teacher forward at most this share of the plain step; peak memory at most the
#: plain student's plus the teacher's weights plus this share of the plain student's peak.
GK_MAX_RATIO = 1.5
MAX_OVERHEAD = 0.10
MEM_MARGIN = 0.15
GK_METHODS = ('pgm', 'pgm_online')


@dataclass
class CocoSpeedResult:
    """One method of one COCO pair; times in ms (medians), memory in MiB."""
    pair: str
    method: str
    config: str
    precision: str = 'AMP fp16'
    plain_ms: float = float('nan')
    distilled_ms: float = float('nan')
    teacher_ms: float = float('nan')
    losses_ms: float = float('nan')
    #: (distilled - plain - teacher forward) over plain, from the sums over the timed steps
    overhead: float = float('nan')
    plain_mem_mib: Optional[float] = None
    distilled_mem_mib: Optional[float] = None
    teacher_weights_mib: float = float('nan')
    seconds: float = 0.0
    error: str = ''
    profile: str = ''

    @property
    def ratio(self) -> float:
        return self.distilled_ms / self.plain_ms

    @property
    def mem_limit_mib(self) -> Optional[float]:
        if self.plain_mem_mib is None:
            return None
        return self.plain_mem_mib * (1 + MEM_MARGIN) + self.teacher_weights_mib

    def targets(self) -> Dict[str, Optional[bool]]:
        """Each target: True (met), False (missed), None (not measured / not applicable)."""
        if self.error:
            return {}
        out: Dict[str, Optional[bool]] = {
            'overhead': bool(self.overhead <= MAX_OVERHEAD),
            'memory': (None if self.mem_limit_mib is None
                       else bool(self.distilled_mem_mib <= self.mem_limit_mib))}
        if self.method in GK_METHODS:
            out['gk_ratio'] = bool(self.ratio <= GK_MAX_RATIO)
        return out

    @property
    def missed(self) -> List[str]:
        return [k for k, v in self.targets().items() if v is False]


def coco_methods(pair: str, names: Optional[Sequence[str]] = None, everything: bool = False
                 ) -> List[Tuple[str, str, Tuple[str, ...]]]:
    """``(method, config, cfg options)`` of the distillation configs of ``pair`` and the
    online-PGM variant, alphabetical. A config whose name extends another's with ``_...``
    (``pgm_imagenet_init``: the same step with another initialisation) is left out unless
    ``names`` asks for it or ``everything``; with ``names``, exactly those (unknown names
    raise)."""
    import glob
    import os.path as osp
    import re

    from ..utils.paths import REPO_ROOT as root
    if pair not in COCO_PAIRS:
        raise ValueError(f'unknown pair {pair!r}; choose from {sorted(COCO_PAIRS)}')
    prefix = COCO_PAIRS[pair][0]
    rows = {}
    for path in sorted(glob.glob(osp.join(root, prefix + '*.py'))):
        rel = osp.relpath(path, root)
        name = re.sub(r'^fpn_|_\dx_coco$', '', osp.basename(path)[len(osp.basename(prefix)):-3])
        rows[name] = (rel, ())
    for variant, (base, opts) in COCO_VARIANTS.items():
        if base in rows:
            rows[variant] = (rows[base][0], opts)
    if names:
        unknown = [n for n in names if n not in rows]
        if unknown:
            raise ValueError(f'{pair}: unknown method(s) {unknown}; known: {sorted(rows)}')
        rows = {n: rows[n] for n in names}
    elif not everything:
        rows = {n: v for n, v in rows.items() if n in COCO_VARIANTS
                or not any(n.startswith(o + '_') for o in rows if o != n)}
    return [(n, cfg, opts) for n, (cfg, opts) in sorted(rows.items())]


def strip_pretrained(cfg) -> None:
    """Drop every ``init_cfg`` of type Pretrained and the checkpoints of a DistillDetector
    config in place: random weights, nothing downloaded (the step cost does not depend on the
    weights)."""
    model = cfg.model
    model.teacher_ckpt = None
    if 'student_ckpt' in model:
        model.student_ckpt = None

    def walk(node):
        if isinstance(node, dict):
            init = node.get('init_cfg')
            if isinstance(init, dict) and init.get('type') == 'Pretrained':
                node['init_cfg'] = None
            for v in node.values():
                walk(v)
        elif isinstance(node, (list, tuple)):
            for v in node:
                walk(v)
    walk(model)


def synthetic_batch(num_images: int = 2, size: Tuple[int, int] = (800, 1333),
                    num_classes: int = 80, boxes_per_image: int = 7, with_mask: bool = False,
                    seed: int = 0) -> dict:
    """A training batch in mmdet's packed form: ``num_images`` random images of ``size``
    (h, w) with ``boxes_per_image`` random GT boxes each (COCO averages ~7)."""
    from mmdet.testing import demo_mm_inputs
    torch.manual_seed(seed)
    return demo_mm_inputs(num_images, [(3, size[0], size[1])] * num_images,
                          num_items=[boxes_per_image] * num_images, num_classes=num_classes,
                          with_mask=with_mask, use_box_type=False)


def seed_random_prototypes(model: nn.Module, per_class: int = 20, seed: int = 0) -> int:
    """Give every Global-Knowledge loss of ``model`` prototypes for every class and level,
    generated (by its own PGM, on its device) from random descriptors: a step's cost depends
    on the prototypes' count, not their values. An online-PGM loss is marked as refreshed for
    the MessageHub's current epoch, so its first step does not replace them from its still
    empty memory bank. Returns the number of losses seeded."""
    from mmengine.logging import MessageHub

    from ..models.utils.progress import hub_info
    g = torch.Generator().manual_seed(seed)
    losses = _pgm_losses(model)
    epoch = int(hub_info(MessageHub.get_current_instance(), 'epoch', 0))
    for loss in losses:
        if isinstance(getattr(loss, 'last_refresh_epoch', None), torch.Tensor):
            loss.last_refresh_epoch.fill_(epoch)
        L, C = loss.num_levels, loss.num_classes
        dev = loss.pgm.proto_s.device
        ds, dt = loss.pgm.proto_s.shape[-1], loss.pgm.proto_t.shape[-1]
        labels = torch.arange(C).repeat_interleave(per_class).to(dev)
        desc_s = [torch.randn(C * per_class, ds, generator=g).to(dev) for _ in range(L)]
        desc_t = [torch.randn(C * per_class, dt, generator=g).to(dev) for _ in range(L)]
        loss.generate_prototypes(desc_s, desc_t, [labels] * L)
    return len(losses)


def set_train_progress(cfg, iteration: int = 20000) -> None:
    """Put the MessageHub at a mid-training position, past every warm-up (ICD's bypass, LR
    warm-up) and before any weight schedule reaches zero, so each method runs its full step."""
    from mmengine.logging import MessageHub
    hub = MessageHub.get_current_instance()
    max_epochs = cfg.train_cfg.get('max_epochs')
    hub.update_info('epoch', 1)
    hub.update_info('max_epochs', max_epochs)
    hub.update_info('iter', iteration)
    hub.update_info('max_iters', cfg.train_cfg.get('max_iters') or 10 * iteration)


def tensor_bytes(*objs) -> int:
    """Bytes of the distinct CUDA storages among tensors found in ``objs`` (modules: their
    parameters, gradients and buffers; optimizers: their state)."""
    seen, total = set(), 0

    def add(t):
        nonlocal total
        if isinstance(t, torch.Tensor) and t.is_cuda:
            key = t.untyped_storage().data_ptr()
            if key not in seen:
                seen.add(key)
                total += t.untyped_storage().nbytes()

    for o in objs:
        if isinstance(o, nn.Module):
            for p in o.parameters():
                add(p)
                add(p.grad)
            for b in o.buffers():
                add(b)
        elif isinstance(o, torch.optim.Optimizer):
            for st in o.state.values():
                for v in st.values():
                    add(v)
    return total


@contextmanager
def profile_ranges(model: nn.Module) -> Iterator[None]:
    """Label the teacher's forward and each distillation loss's forward as profiler ranges
    (``mmkd/teacher``, ``mmkd/loss/<name>``), outermost calls only."""
    from torch.profiler import record_function
    handles, stack = [], []

    def hook_pair(mods, label):
        depth = [0]

        def pre(*_):
            if depth[0] == 0:
                rf = record_function(label)
                rf.__enter__()
                stack.append(rf)
            depth[0] += 1

        def post(*_):
            depth[0] -= 1
            if depth[0] == 0:
                stack.pop().__exit__(None, None, None)
        for m in mods:
            handles.append(m.register_forward_pre_hook(pre))
            handles.append(m.register_forward_hook(post))
    hook_pair(teacher_modules(model.teacher), 'mmkd/teacher')
    for name, loss in model.distill_losses.items():
        hook_pair([loss], f'mmkd/loss/{name}')
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def profile_steps(model, optim, batch, scaler, steps: int = 3, rows: int = 25) -> str:
    """torch.profiler table (sorted by device time) of ``steps`` distilled training steps."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available()
                                     else [])
    try:
        with profile_ranges(model), profile(activities=acts) as prof:
            for _ in range(steps):
                timed_train_step(model, optim, batch, scaler)
        key = 'device_time_total' if torch.cuda.is_available() else 'cpu_time_total'
        return prof.key_averages().table(sort_by=key, row_limit=rows)
    except Exception as exc:  # the measurement stands without its profile
        return f'torch.profiler failed: {type(exc).__name__}: {exc}'


def measure_coco_method(pair: str, name: str, config: str, options: Sequence[str] = (),
                        iters: int = 8, warmup: int = 3, amp: bool = True,
                        size: Tuple[int, int] = (800, 1333), num_images: int = 2,
                        device: str = 'cuda', profile: bool = False) -> CocoSpeedResult:
    """Plain student vs distilled step of one COCO config, steps interleaved, on ``device``.

    Random weights (nothing downloaded), one synthetic batch of ``num_images`` images of
    ``size`` reused for every step, SGD for every parameter, GK prototypes seeded. Peak memory
    (CUDA): the step's peak allocation above what was allocated before it, plus the model's
    own persistent tensors (weights, gradients, optimizer state; the hidden teacher's weights
    for the distilled model), so the other model held in the same process does not count.
    With ``profile``, a torch.profiler table of 3 more distilled steps goes in ``.profile``
    when the method misses a target."""
    from mmdet.registry import MODELS
    t_start = time.perf_counter()
    res = CocoSpeedResult(pair, name, config, 'AMP fp16' if amp else 'fp32')
    if amp and device != 'cuda':
        raise RuntimeError('AMP timing needs a CUDA device; use --precision fp32 with --device cpu')
    cfg = load_resolved(config, list(options))
    strip_pretrained(cfg)
    set_train_progress(cfg)
    torch.manual_seed(0)
    kd = MODELS.build(cfg.model).to(device).train()
    plain = copy.deepcopy(kd.student).to(device).train()
    seed_random_prototypes(kd)
    with_mask = bool(getattr(getattr(kd.student, 'roi_head', None), 'with_mask', False))
    from ..models.detectors.distill_detector import num_classes_of
    batch = synthetic_batch(num_images, size, num_classes_of(kd.student) or 80,
                            with_mask=with_mask)
    opt_kd = torch.optim.SGD(kd.parameters(), lr=1e-4, momentum=0.9)
    opt_plain = torch.optim.SGD(plain.parameters(), lr=1e-4, momentum=0.9)
    scalers = {k: _grad_scaler() if amp else None for k in ('plain', 'kd')}
    cuda = device == 'cuda'
    res.teacher_weights_mib = tensor_bytes(kd.teacher) / 2**20 if cuda else float('nan')
    times, mem = interleaved_steps(kd, plain, dict(plain=opt_plain, kd=opt_kd),
                                   [batch] * (warmup + iters), warmup, scalers, cuda)
    res.plain_ms = 1e3 * statistics.median(times['plain'])
    res.distilled_ms = 1e3 * statistics.median(times['kd'])
    res.teacher_ms = 1e3 * statistics.median(times['teacher'])
    res.losses_ms = 1e3 * statistics.median(times['losses'])
    res.overhead = (sum(times['kd']) - sum(times['plain']) - sum(times['teacher'])) / sum(
        times['plain'])
    if mem:
        res.plain_mem_mib, res.distilled_mem_mib = mem['plain'], mem['kd']
    if profile and res.missed:
        res.profile = profile_steps(kd, opt_kd, batch, scalers['kd'])
    del kd, plain, opt_kd, opt_plain
    if cuda:
        torch.cuda.empty_cache()
    res.seconds = time.perf_counter() - t_start
    return res


def _mark(ok: Optional[bool]) -> str:
    return {True: 'yes', False: '**no**', None: 'n/a'}[ok]


def coco_speed_table(results: Sequence[CocoSpeedResult]) -> str:
    """One markdown table: a row per (pair, method)."""
    lines = ['| pair | method | plain step (ms) | distilled step (ms) | ratio | teacher forward '
             '(ms) | beyond the teacher (% of plain) | peak memory plain / distilled / limit '
             '(MiB) | targets met |', '|' + '---|' * 9]
    for r in results:
        label = COCO_PAIRS[r.pair][1]
        if r.error:
            lines.append(f'| {label} | {r.method} | {r.error} |' + ' |' * 6)
            continue
        if r.plain_mem_mib is None:
            mem = 'n/a (no CUDA)'
        else:
            mem = (f'{r.plain_mem_mib:.0f} / {r.distilled_mem_mib:.0f} / '
                   f'{r.mem_limit_mib:.0f}')
        tg = r.targets()
        met = ', '.join(f'{k}: {_mark(v)}' for k, v in tg.items())
        lines.append(f'| {label} | {r.method} | {r.plain_ms:.1f} | {r.distilled_ms:.1f} | '
                     f'{r.ratio:.2f}x | {r.teacher_ms:.1f} | {100 * r.overhead:.1f}% | {mem} | '
                     f'{met} |')
    return '\n'.join(lines)


def coco_speed_section(results: Sequence[CocoSpeedResult], command: str, device: str,
                       size: Tuple[int, int], num_images: int, iters: int, warmup: int,
                       date: str) -> str:
    """The markdown section of ``--coco``: settings, the exact command, the table, the targets
    missed."""
    missed = [f'{COCO_PAIRS[r.pair][1]} {r.method}: {", ".join(r.missed)}' for r in results
              if r.missed]
    errors = [r for r in results if r.error]
    precision = results[0].precision if results else 'AMP fp16'
    body = [
        '## Step time and memory at COCO size on a GPU (tools/benchmark_speed.py --coco)', '',
        f'Measured on {date}, **{device}**, {precision}, {num_images} images of {size[1]}x'
        f'{size[0]} per step, median of {iters} timed steps after {warmup} warm-up, plain and '
        'distilled steps interleaved in one process. Random weights and synthetic images with 7 '
        'random boxes each: the cost does not depend on them. The teacher forward is timed with '
        'CUDA events around its calls (wall time on a CPU). "Beyond the teacher" is (distilled '
        '- plain - teacher forward) / plain: the distillation losses, the extra backward and '
        'update, the recording of the student\'s outputs. Peak memory is each model\'s own: '
        'the step\'s '
        'peak allocation above what was allocated before it, plus that model\'s weights, '
        'gradients and optimizer state (and for the distilled model the teacher\'s weights).',
        '',
        f'Targets: Global Knowledge at most {GK_MAX_RATIO}x the plain step (gk_ratio); every '
        f'method at most {MAX_OVERHEAD:.0%} of the plain step beyond the teacher forward '
        f'(overhead); peak memory at most the plain student\'s plus the teacher\'s weights plus '
        f'{MEM_MARGIN:.0%} of the plain student\'s peak (memory; the limit column).', '',
        '```', command, '```', '', coco_speed_table(results), '']
    if missed:
        body += ['Targets missed (torch.profiler summaries in the run\'s log with --profile):',
                 ''] + [f'- {m}' for m in missed] + ['']
    if errors:
        body += [f'{len(errors)} method(s) failed: see the log.', '']
    return '\n'.join(body)


def write_gpu_speed_section(doc_path: str, body: str) -> None:
    replace_section(doc_path, body, GPU_SPEED_BEGIN, GPU_SPEED_END)


__all__ = ['CallTimer', 'SpeedResult', 'measure_method', 'measure_cpu_memory', 'parse_options',
           'speed_section', 'speed_table', 'write_speed_section', 'step_timers', 'prepare_pgm',
           'COCO_PAIRS',
           'CocoSpeedResult', 'coco_methods', 'measure_coco_method', 'coco_speed_section',
           'coco_speed_table', 'seed_random_prototypes', 'strip_pretrained', 'synthetic_batch',
           'tensor_bytes', 'write_gpu_speed_section']
