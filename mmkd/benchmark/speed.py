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
from typing import Dict, Iterator, List, Optional, Sequence

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
    """Wall time of the outermost forward calls into ``modules`` (nested calls count once).

    ``inner``: another timer whose time spent during these calls is subtracted (the teacher
    inside a distillation loss)."""

    def __init__(self, modules: Sequence[nn.Module], inner: Optional['CallTimer'] = None) -> None:
        self.total = 0.0
        self.inner = inner
        self._depth = 0
        self._t0 = 0.0
        self._inner0 = 0.0
        self._handles = []
        for m in modules:
            self._handles.append(m.register_forward_pre_hook(self._pre))
            self._handles.append(m.register_forward_hook(self._post))

    def _pre(self, *_) -> None:
        if self._depth == 0:
            _sync()
            self._t0 = time.perf_counter()
            self._inner0 = self.inner.total if self.inner else 0.0
        self._depth += 1

    def _post(self, *_) -> None:
        self._depth -= 1
        if self._depth == 0:
            _sync()
            spent = time.perf_counter() - self._t0
            if self.inner:
                spent -= self.inner.total - self._inner0
            self.total += spent

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
def step_timers(model: nn.Module) -> Iterator[Dict[str, CallTimer]]:
    """Timers on a DistillDetector's teacher and distillation losses (removed on exit)."""
    teacher = CallTimer(teacher_modules(model.teacher))
    losses = CallTimer(list(model.distill_losses.values()), inner=teacher)
    try:
        yield {'teacher': teacher, 'losses': losses}
    finally:
        teacher.remove()
        losses.remove()


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
    scalers = {k: torch.cuda.amp.GradScaler() if amp else None for k in ('plain', 'kd')}
    times: Dict[str, List[float]] = {'plain': [], 'kd': [], 'teacher': [], 'losses': []}
    mem: Dict[str, float] = {}
    batches = real_batches(cfg.train_dataloader, warmup + iters)
    with step_timers(kd) as timers:
        for i, batch in enumerate(batches):
            for key, model, opt in (('plain', plain, opt_plain), ('kd', kd, opt_kd)):
                if device == 'cuda':
                    torch.cuda.reset_peak_memory_stats()
                for t in timers.values():
                    t.total = 0.0
                dt = timed_train_step(model, opt, batch, scalers[key])
                if i < warmup:
                    continue
                times[key].append(dt)
                if key == 'kd':
                    times['teacher'].append(timers['teacher'].total)
                    times['losses'].append(timers['losses'].total)
                if device == 'cuda':
                    mem[key] = max(mem.get(key, 0.0), torch.cuda.max_memory_allocated() / 2**20)
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


__all__ = ['CallTimer', 'SpeedResult', 'measure_method', 'measure_cpu_memory', 'parse_options', 'speed_section',
           'speed_table', 'write_speed_section', 'step_timers', 'prepare_pgm']
