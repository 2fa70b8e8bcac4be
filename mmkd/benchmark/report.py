"""Aggregate the benchmark's results into a markdown table, a bar chart and loss curves."""
from __future__ import annotations

import glob
import json
import math
import os
import os.path as osp
import statistics
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from .runs import METRIC_KEYS, Plan, Run, fmt_seconds
from .suite import METHODS

METRIC_NAMES = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl')
BEGIN, END = '<!-- benchmark:BEGIN -->', '<!-- benchmark:END -->'


@dataclass
class Stat:
    """Mean, sample standard deviation (n - 1; None for one value) and count."""
    mean: float
    std: Optional[float]
    n: int

    def fmt(self, digits: int = 1) -> str:
        if self.n == 0 or math.isnan(self.mean):
            return 'n/a'
        if self.std is None:
            return f'{self.mean:.{digits}f}'
        return f'{self.mean:.{digits}f} ± {self.std:.{digits}f}'


def aggregate(values: Sequence[float]) -> Stat:
    """Mean and sample std of ``values``, ignoring NaN and COCO's -1 ("no such objects")."""
    vals = [float(v) for v in values if v is not None and not math.isnan(v) and v >= 0]
    if not vals:
        return Stat(float('nan'), None, 0)
    std = statistics.stdev(vals) if len(vals) > 1 else None
    return Stat(statistics.fmean(vals), std, len(vals))


def gap_recovered(method: float, student: float, teacher: float) -> Optional[float]:
    """Share of the teacher-student gap the method recovers: (method - student) /
    (teacher - student). None when the teacher is not above the student."""
    gap = teacher - student
    if not gap > 0:
        return None
    return (method - student) / gap


@dataclass
class Row:
    name: str
    label: str
    stats: Dict[str, Stat]  # by METRIC_NAMES, in AP points (x100)
    train_seconds: Stat
    seeds: List[int]


def collect(plan: Plan) -> Dict[str, Row]:
    """One row per method of the plan (teacher, student, methods), from its runs' metrics."""
    groups: Dict[str, List[Run]] = {}
    for r in plan.runs:
        if r.role != 'cls_teacher':
            groups.setdefault(r.name, []).append(r)
    rows = {}
    for name, runs in groups.items():
        found = [(r, r.metrics()) for r in runs]
        found = [(r, m) for r, m in found if m]
        stats = {short: aggregate([100 * m[key] for _, m in found if key in m])
                 for short, key in zip(METRIC_NAMES, METRIC_KEYS)}
        rows[name] = Row(name, METHODS[name].label or name, stats,
                         aggregate([m.get('train_seconds', float('nan')) for _, m in found]),
                         [r.seed for r, _ in found])
    return rows


def _fmt_signed(v: Optional[float], digits: int = 1, pct: bool = False) -> str:
    if v is None or math.isnan(v):
        return 'n/a'
    return f'{100 * v:+.0f} %' if pct else f'{v:+.{digits}f}'


def markdown_table(rows: Dict[str, Row], order: Sequence[str],
                   baselines: Optional[Dict[str, str]] = None) -> Tuple[str, List[str]]:
    """The results table and a list of remarks (calibration checks).

    ``baselines`` maps a method to the plain model its gain is measured against (default: the
    plain ``student``); the gap recovered is then (method - baseline) / (teacher - baseline)."""
    baselines = baselines or {}
    t = rows.get('teacher')
    t_ap = t.stats['AP'].mean if t and t.stats['AP'].n else float('nan')

    def ap_of(name: str) -> Tuple[float, float]:
        row = rows.get(name)
        if row is None or not row.stats['AP'].n:
            return float('nan'), 0.0
        return row.stats['AP'].mean, row.stats['AP'].std or 0.0

    s_ap, _ = ap_of('student')
    head = ('| model | seeds | AP | AP50 | AP75 | APs | APm | APl | ΔAP vs its student | '
            'gap recovered | Δ > spread | train time / run |')
    lines = [head, '|' + '---|' * 12]
    for name in order:
        row = rows.get(name)
        if row is None:
            continue
        ap = row.stats['AP']
        base = baselines.get(name, 'student')
        b_ap, b_std = ap_of(base)
        gain = rec = None
        beyond = ''
        if name not in ('teacher', 'student') and ap.n and not math.isnan(b_ap):
            gain = ap.mean - b_ap
            rec = gap_recovered(ap.mean, b_ap, t_ap)
            spread = (ap.std or 0.0) + b_std
            beyond = ('yes' if abs(gain) > spread else 'no') if (ap.n > 1) else 'one seed'
        if name == 'teacher':
            gain = t_ap - s_ap if not math.isnan(s_ap) else None
        label = row.label if base == 'student' else f'{row.label}; vs `{base}`'
        cells = [label, ','.join(map(str, row.seeds)) or 'missing',
                 *[row.stats[k].fmt() for k in METRIC_NAMES],
                 _fmt_signed(gain), _fmt_signed(rec, pct=True) if rec is not None else 'n/a',
                 beyond, 'shipped' if name == 'teacher' and not row.train_seconds.mean
                 else fmt_seconds(row.train_seconds.mean) if row.train_seconds.n else 'n/a']
        lines.append('| ' + ' | '.join(cells) + ' |')
    remarks = []
    if not math.isnan(t_ap) and not math.isnan(s_ap):
        gap = t_ap - s_ap
        ok = gap >= 5.0
        remarks.append(f'Teacher - student gap: {gap:+.1f} AP '
                       f'({"meets" if ok else "below"} the 5 AP the benchmark needs'
                       f'{"" if ok else "; gap-recovered shares are not meaningful"}).')
    return '\n'.join(lines), remarks


# ---- charts ------------------------------------------------------------------------------------
def _pyplot():
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


def bar_chart(rows: Dict[str, Row], order: Sequence[str], path: str) -> Optional[str]:
    """AP per model (mean, error bar = sample std) as a PNG; None without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    names = [n for n in order if n in rows and rows[n].stats['AP'].n]
    means = [rows[n].stats['AP'].mean for n in names]
    errs = [rows[n].stats['AP'].std or 0.0 for n in names]
    plain = {n for n in names if n in METHODS and METHODS[n].role in ('student', 'baseline')}
    colors = ['tab:gray' if n == 'teacher' else 'tab:blue' if n in plain else 'tab:orange'
              for n in names]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(names) + 2), 3.6))
    ax.bar(range(len(names)), means, yerr=errs, color=colors, capsize=3)
    ax.set_xticks(range(len(names)), names, rotation=30, ha='right')
    ax.set_ylabel('COCO box AP (val)')
    if 'student' in names:
        ax.axhline(rows['student'].stats['AP'].mean, color='tab:blue', lw=0.8, ls='--')
    ax.set_title('mmkd benchmark on the synthetic data (mean ± std over seeds)')
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


#: Faster R-CNN's own loss terms; everything else in ``loss`` is distillation.
DETECTION_LOSSES = ('loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox')


def read_loss_curve(work_dir: str) -> List[Tuple[int, float, float]]:
    """(iteration, detection loss, distillation loss) from every
    ``<ts>/vis_data/scalars.json`` of a training work dir (several after a resume; later
    entries win). The distillation part is the logged total minus the detector's own terms."""
    points: Dict[int, Tuple[float, float]] = {}
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                rec = json.loads(line)
                if 'loss' not in rec or 'iter' not in rec or 'step' not in rec:
                    continue
                det = sum(float(rec.get(k, 0.0)) for k in DETECTION_LOSSES)
                points[int(rec['step'])] = (det, max(0.0, float(rec['loss']) - det))
    return [(k, d, kd) for k, (d, kd) in sorted(points.items())]


def loss_curves(plan: Plan, path: str) -> Optional[str]:
    """Detection loss and distillation loss against iteration, one line per run, as a PNG."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, (ax_det, ax_kd) = plt.subplots(1, 2, figsize=(11, 4))
    cmap = plt.get_cmap('tab20')
    names = list(dict.fromkeys(r.name for r in plan.runs if r.role != 'cls_teacher'))
    drawn = 0
    for r in plan.runs:
        if r.role == 'cls_teacher':
            continue
        pts = read_loss_curve(r.work_dir)
        if not pts:
            continue
        x, det, kd = zip(*pts)
        first = r.seed == min(plan.seeds) or r.role == 'teacher'
        style = dict(color=cmap(names.index(r.name) % 20), lw=1.0, ls='-' if first else ':',
                     marker='.' if len(x) < 20 else None)
        ax_det.plot(x, det, label=r.name if first else None, **style)
        if r.role == 'distill':
            ax_kd.plot(x, kd, label=r.name if first else None, **style)
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax_det.set_title('detection loss (RPN + RoI head)')
    ax_kd.set_title('distillation loss (weighted sum)')
    for ax in (ax_det, ax_kd):
        ax.set_xlabel('iteration')
        ax.set_yscale('log')
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2)
    fig.suptitle('training losses (solid: first seed, dotted: other seeds)')
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---- the document ------------------------------------------------------------------------------
def replace_section(doc_path: str, body: str, begin: str = BEGIN, end: str = END) -> None:
    """Write ``body`` between the ``begin`` and ``end`` markers of ``doc_path``: replaced in
    place when the markers exist, appended otherwise; the rest of the file is kept as is."""
    text = ''
    if osp.isfile(doc_path):
        with open(doc_path, encoding='utf-8') as f:
            text = f.read()
    block = f'{begin}\n{body.rstrip()}\n{end}'
    i, j = text.find(begin), text.find(end)
    if i >= 0 and j > i:
        text = text[:i] + block + text[j + len(end):]
    elif i >= 0 or j >= 0:
        raise ValueError(f'{doc_path} has only one of the markers {begin} / {end}; fix the '
                         'file by hand (both or neither must be present)')
    else:
        text = (text.rstrip() + '\n\n' if text.strip() else '') + block + '\n'
    os.makedirs(osp.dirname(osp.abspath(doc_path)), exist_ok=True)
    with open(doc_path, 'w', encoding='utf-8') as f:
        f.write(text)


def _rel_to_repo(path: str) -> str:
    from ..utils.paths import REPO_ROOT
    rel = osp.relpath(path, REPO_ROOT)
    return path if rel.startswith('..') else rel


def report_order(plan: Plan) -> List[str]:
    return ['teacher', 'student'] + list(plan.methods)


def build_report(plan: Plan, command: str, device: str, doc_path: Optional[str],
                 image_dir: Optional[str] = None, date: Optional[str] = None) -> str:
    """The markdown section (also written into ``doc_path`` between the benchmark markers when
    given) with the table, remarks, command and the two PNGs (saved in ``image_dir``, by
    default ``<doc dir>/images``)."""
    import datetime
    rows = collect(plan)
    order = report_order(plan)
    table, remarks = markdown_table(rows, order,
                                    {n: METHODS[n].baseline for n in order if n in METHODS})
    missing = [r.label for r in plan.runs if r.role != 'cls_teacher' and r.metrics() is None]
    base = osp.dirname(osp.abspath(doc_path)) if doc_path else plan.work_dir
    image_dir = image_dir or osp.join(base, 'images')
    bars = bar_chart(rows, order, osp.join(image_dir, 'benchmark_ap.png'))
    curves = loss_curves(plan, osp.join(image_dir, 'benchmark_loss.png'))
    date = date or datetime.date.today().isoformat()
    given = plan.teacher.given_checkpoint
    teacher_note = (f'The teacher is the trained checkpoint `{_rel_to_repo(given)}` (seed 0), '
                    'evaluated here.' if given else 'The teacher is trained once (seed 0).')
    parts = [
        '## Accuracy of every method (tools/benchmark.py)', '',
        f'Generated by `tools/benchmark.py` on {date}, {device}. Each model is trained for '
        f'{plan.epochs} epochs (the teacher {plan.teacher.epochs}) on the synthetic train '
        'split and evaluated on the held-out val '
        f'split with pycocotools (box AP in points). {teacher_note} The '
        'student and each method are trained once per seed '
        f'({", ".join(map(str, plan.seeds))}). Mean ± sample std over seeds. A method\'s gain '
        'is measured against its own student: the plain student, or the plain baseline named '
        'in its row when the method changes the student\'s architecture. "Gap recovered" is '
        '(method - its student) / (teacher - its student) on AP; "Δ > spread" says whether '
        'the gain exceeds the sum of the two seed std deviations.', '',
        '```', command, '```', '', table, '']
    parts += [f'- {r}' for r in remarks]
    if missing:
        parts.append(f'- Not finished yet: {", ".join(missing)}.')
    if remarks or missing:
        parts.append('')
    for p, what in ((bars, 'AP per model'), (curves, 'training loss curves')):
        if p:
            parts.append(f'![{what}]({osp.relpath(p, base)})')
        else:
            parts.append(f'({what}: not drawn, matplotlib is not installed or no data yet)')
    body = '\n'.join(parts) + '\n'
    if doc_path:
        replace_section(doc_path, body)
    return body
