"""Aggregate the benchmark's results: the markdown table, the loss-balance table, and the AP,
AP-by-size and loss-curve charts."""
from __future__ import annotations

import glob
import json
import math
import os.path as osp
import statistics
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..utils.atomic import atomic_write
from .runs import METRIC_KEYS, Plan, Run, fmt_seconds

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
    """One row per model of the plan (teacher, student, methods, baselines), from its runs'
    metrics."""
    groups: Dict[str, List[Run]] = {}
    for r in plan.runs:
        if r.role in ('teacher', 'student', 'distill'):
            groups.setdefault(r.name, []).append(r)
    rows = {}
    for name, runs in groups.items():
        found = [(r, r.metrics()) for r in runs]
        found = [(r, m) for r, m in found if m]
        stats = {short: aggregate([100 * m[key] for _, m in found if key in m])
                 for short, key in zip(METRIC_NAMES, METRIC_KEYS)}
        rows[name] = Row(name, plan.labels.get(name) or name, stats,
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
        if gap <= 0:
            remarks.append(f'The teacher ({t_ap:.1f} AP) is not better than the student '
                           f'({s_ap:.1f} AP): distillation from it cannot be expected to '
                           'improve this student, so read the ΔAP column as the harm each '
                           'method does (or avoids), not as a gain.')
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


def _color(name: str, plain: Sequence[str]) -> str:
    if name == 'teacher':
        return 'tab:gray'
    if name in plain:
        return 'tab:blue'
    return 'tab:green' if name.endswith('+ab') else 'tab:orange'


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fmt = osp.splitext(path)[1].lstrip('.') or 'png'
    with atomic_write(path, 'wb') as f:
        fig.savefig(f, dpi=110, format=fmt)
    return path


def bar_chart(rows: Dict[str, Row], order: Sequence[str], path: str,
              plain: Sequence[str] = ('student', ), title: str = '') -> Optional[str]:
    """AP per model (mean, error bar = sample std) as a PNG; None without matplotlib.
    Gray: teacher, blue: plain students (``plain``), orange: methods, green: auto-balanced."""
    plt = _pyplot()
    if plt is None:
        return None
    names = [n for n in order if n in rows and rows[n].stats['AP'].n]
    means = [rows[n].stats['AP'].mean for n in names]
    errs = [rows[n].stats['AP'].std or 0.0 for n in names]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(names) + 2), 3.6))
    ax.bar(range(len(names)), means, yerr=errs, color=[_color(n, plain) for n in names],
           capsize=3)
    ax.set_xticks(range(len(names)), names, rotation=30, ha='right')
    ax.set_ylabel('COCO box AP (val)')
    if 'student' in names:
        ax.axhline(rows['student'].stats['AP'].mean, color='tab:blue', lw=0.8, ls='--')
    ax.set_title(title or 'mmkd benchmark (mean ± std over seeds)')
    path = _save(fig, path)
    plt.close(fig)
    return path


def size_chart(rows: Dict[str, Row], order: Sequence[str], path: str,
               title: str = '') -> Optional[str]:
    """APs / APm / APl per model (grouped bars, mean ± std over seeds) as a PNG; a size with no
    objects in the val set (COCO's -1) is left out. None without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    sizes = [k for k in ('APs', 'APm', 'APl') if any(rows[n].stats[k].n for n in rows)]
    names = [n for n in order if n in rows and rows[n].stats['AP'].n]
    if not sizes or not names:
        return None
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(names) + 2), 3.6))
    width = 0.8 / len(sizes)
    colors = {'APs': 'tab:cyan', 'APm': 'tab:purple', 'APl': 'tab:brown'}
    for j, k in enumerate(sizes):
        xs = [i + (j - (len(sizes) - 1) / 2) * width for i in range(len(names))]
        vals = [rows[n].stats[k].mean if rows[n].stats[k].n else 0.0 for n in names]
        errs = [rows[n].stats[k].std or 0.0 for n in names]
        ax.bar(xs, vals, width, yerr=errs, capsize=2, label=k, color=colors[k])
    ax.set_xticks(range(len(names)), names, rotation=30, ha='right')
    ax.set_ylabel('COCO box AP by object size (val)')
    ax.legend(fontsize=8)
    ax.set_title(title or 'AP of small / medium / large objects (mean ± std over seeds)')
    path = _save(fig, path)
    plt.close(fig)
    return path


#: mmdet detectors' own loss terms (two- and one-stage); everything else in ``loss`` is
#: distillation.
DETECTION_LOSSES = ('loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox', 'loss_centerness',
                    'loss_iou', 'loss_dfl', 'loss_obj', 'loss_mask')


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
                # training lines: 'loss' and 'step' (mmengine >= 0.8 also writes 'iter')
                if 'loss' not in rec or 'step' not in rec:
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
    runs = [r for r in plan.runs if r.role in ('teacher', 'student', 'distill')]
    names = list(dict.fromkeys(r.name for r in runs))
    drawn = 0
    for r in runs:
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
    ax_det.set_title('detection loss (the student\'s own terms)')
    ax_kd.set_title('distillation loss (weighted sum)')
    for ax in (ax_det, ax_kd):
        ax.set_xlabel('iteration')
        ax.set_yscale('log')
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2)
    fig.suptitle('training losses (solid: first seed, dotted: other seeds)')
    path = _save(fig, path)
    plt.close(fig)
    return path


# ---- loss balance (loss_balance.json of the runs, written by LossBalanceHook) -------------------
def read_loss_balance(work_dir: str) -> Optional[dict]:
    """``<work_dir>/loss_balance.json`` when it exists and has the expected shape
    (``{"version": 1, "terms": {key: {"ratio", "scale", ...}}, "final": {key: ratio}}``),
    else None."""
    path = osp.join(work_dir, 'loss_balance.json')
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get('terms'), dict):
        return None
    return data


def loss_balance_table(plan: Plan) -> Optional[str]:
    """Per method: each distillation term's ratio to the detection loss over the first measured
    iterations and over the last ones, and the factor auto-balance applied (mean over seeds);
    None when no run wrote a ``loss_balance.json``."""
    terms: Dict[str, Dict[str, Dict[str, List[float]]]] = {}
    iters: Dict[str, List[int]] = {}
    for r in plan.runs:
        if r.role != 'distill':
            continue
        data = read_loss_balance(r.work_dir)
        if data is None:
            continue
        iters.setdefault(r.name, []).append(int(data.get('measured_iters') or 0))
        final = data.get('final') or {}
        for key, t in data['terms'].items():
            if not isinstance(t, dict):
                continue
            d = terms.setdefault(r.name, {}).setdefault(key, {'ratio': [], 'final': [],
                                                              'scale': [], 'warned': []})
            for field_, value in (('ratio', t.get('ratio')), ('scale', t.get('scale')),
                                  ('final', final.get(key)), ('warned', t.get('warned'))):
                if isinstance(value, (int, float)) and math.isfinite(float(value)):
                    d[field_].append(float(value))
    if not terms:
        return None

    def mean(v: List[float], fmt: str) -> str:
        return format(statistics.fmean(v), fmt) if v else 'n/a'

    lines = ['| model | term | ratio to detection loss, first iterations | ratio, last '
             'iterations | auto-balance scale | warned |', '|---|---|---|---|---|---|']
    for name in plan.rows:
        for key, d in sorted(terms.get(name, {}).items()):
            warned = 'yes' if any(d['warned']) else 'no'
            lines.append(f'| {name} | `{key}` | {mean(d["ratio"], ".2f")} | '
                         f'{mean(d["final"], ".2f")} | {mean(d["scale"], ".3g")} | {warned} |')
    n = sorted({i for v in iters.values() for i in v})
    head = (f'Ratio of each weighted distillation term to the student\'s detection loss, '
            f'measured by mmkd over the first {"/".join(map(str, n))} iterations of each run '
            '(`loss_balance.json`), mean over seeds; "last iterations" is the same ratio at the '
            'end of training; the scale is the factor auto-balance applied to the term\'s weight '
            '(1 when it is off).')
    return head + '\n\n' + '\n'.join(lines)


# ---- the document ------------------------------------------------------------------------------
def replace_section(doc_path: str, body: str, begin: str = BEGIN, end: str = END) -> None:
    """Write ``body`` between the ``begin`` and ``end`` markers of ``doc_path``: replaced in
    place when the markers exist, appended otherwise; the rest of the file is kept as is
    (written atomically)."""
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
    with atomic_write(doc_path) as f:
        f.write(text)


def markers(plan: Plan) -> Tuple[str, str]:
    """The doc markers of a plan's section: the scratch and finetune tables of the built-in
    data live side by side in docs/benchmarks.md."""
    if plan.protocol == 'scratch':
        return BEGIN, END
    return '<!-- benchmark-finetune:BEGIN -->', '<!-- benchmark-finetune:END -->'


def _rel_to_repo(path: str) -> str:
    from ..utils.paths import REPO_ROOT
    rel = osp.relpath(path, REPO_ROOT)
    return path if rel.startswith('..') else rel


def report_order(plan: Plan) -> List[str]:
    return plan.rows


def build_report(plan: Plan, command: str, device: str, doc_path: Optional[str],
                 image_dir: Optional[str] = None, date: Optional[str] = None) -> str:
    """The markdown section (also written into ``doc_path`` between the plan's markers when
    given) with the setup, the table, remarks, skipped methods, the loss balance, the command
    and the PNGs (AP, AP by size, loss curves; saved in ``image_dir``, by default
    ``<doc dir>/images``)."""
    import datetime
    rows = collect(plan)
    order = report_order(plan)
    table, remarks = markdown_table(rows, order, plan.baselines)
    missing = [r.label for r in plan.runs
               if r.role in ('teacher', 'student', 'distill') and r.metrics() is None]
    base = osp.dirname(osp.abspath(doc_path)) if doc_path else plan.work_dir
    image_dir = image_dir or osp.join(base, 'images')
    prefix = 'benchmark' if plan.protocol == 'scratch' else f'benchmark_{plan.protocol}'
    plain = ['student'] + sorted(set(plan.baselines.values()) - {'student'})
    what = 'the built-in synthetic data' if plan.builtin else 'your data'
    bars = bar_chart(rows, order, osp.join(image_dir, f'{prefix}_ap.png'), plain,
                     f'mmkd benchmark on {what}, {plan.protocol} (mean ± std over seeds)')
    sizes = size_chart(rows, order, osp.join(image_dir, f'{prefix}_ap_sizes.png'))
    curves = loss_curves(plan, osp.join(image_dir, f'{prefix}_loss.png'))
    balance = loss_balance_table(plan)
    date = date or datetime.date.today().isoformat()
    given = plan.teacher.given_checkpoint
    teacher_note = (f'The teacher is the trained checkpoint `{_rel_to_repo(given)}`, evaluated '
                    'here.' if given else 'The teacher is trained once (seed 0).')
    title = 'Accuracy of every method (tools/benchmark.py)' + (
        ', finetune protocol' if plan.protocol == 'finetune' else '')
    start = ('Every run, the plain student included, starts from the same converged student '
             f'and trains {plan.epochs} more epochs (equal compute).'
             if plan.protocol == 'finetune' else
             f'Each student is trained for {plan.epochs} epochs from its own initialisation '
             f'(the teacher {plan.teacher.epochs}).')
    parts = [
        f'## {title}', '',
        f'Generated by `tools/benchmark.py` on {date}, {device}. {start} Every model is '
        'evaluated on the val split with pycocotools (box AP in points). '
        f'{teacher_note} The student and each method are trained once per seed '
        f'({", ".join(map(str, plan.seeds))}). Mean ± sample std over seeds. A method\'s gain '
        'is measured against its own student: the plain student, or the plain baseline named '
        'in its row when the method changes the student\'s architecture. "Gap recovered" is '
        '(method - its student) / (teacher - its student) on AP; "Δ > spread" says whether '
        'the gain exceeds the sum of the two seed std deviations. "Train time / run" is the '
        'wall time of one training, as measured (runs may have shared the machine).', '']
    if plan.setup:
        parts += [f'- {line}' for line in plan.setup] + ['']
    parts += ['```', command, '```', '', table, '']
    parts += [f'- {r}' for r in remarks]
    for name, reason in plan.skipped:
        parts.append(f'- **{name} skipped**: {reason}.')
    for name in order:
        for note in plan.notes.get(name, []):
            parts.append(f'- {name}: {note}.')
    empty = [r.label for r in plan.runs if (r.metrics() or {}).get('no_detections')]
    if empty:
        parts.append(f'- Detected nothing on the val set (AP 0): {", ".join(empty)}.')
    if missing:
        parts.append(f'- Not finished yet: {", ".join(missing)}.')
    if parts[-1] != '':
        parts.append('')
    if balance:
        parts += ['### Loss balance', '', balance, '']
    for p, what in ((bars, 'AP per model'), (sizes, 'AP by object size'),
                    (curves, 'training loss curves')):
        if p:
            parts.append(f'![{what}]({osp.relpath(p, base)})')
        else:
            parts.append(f'({what}: not drawn, matplotlib is not installed or no data yet)')
    body = '\n'.join(parts) + '\n'
    if doc_path:
        replace_section(doc_path, body, *markers(plan))
    return body
