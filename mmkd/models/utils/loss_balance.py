"""Loss balance: each distillation term measured against the student's detection loss, a report
(log lines, warnings, ``loss_balance.json``) and ``auto_balance``, which fixes each term's weight
once so that it starts at a target ratio.

Why: the paper weights of a method assume the paper's feature scale, input size and a ~100k
iteration schedule. Fine-tuning a converged student on a small data set with them can let one
distillation term outweigh the whole detection loss for the entire run, and the student ends
worse than without distillation. The report makes that visible; ``auto_balance`` removes it.

Definitions (every value is a batch mean as mmengine logs it, then averaged over the ranks):

* **detection loss** ``D(i)`` at iteration ``i``: the sum of the student's own loss entries, i.e.
  every key of the loss dict that contains ``'loss'`` and is not a distillation key (a loss
  name, a key starting with a loss name and ``_``, or a key a loss returned), each reduced
  as mmengine's ``parse_losses`` does (a tensor by ``.mean()``, a list of tensors by the sum of
  their means). For Faster R-CNN: ``loss_rpn_cls + loss_rpn_bbox + loss_cls + loss_bbox``.
* **term**: one distillation loss key (``loss_cwd``, ``loss_gk_bg``...), except the keys a
  loss declares in ``balance_exclude`` (terms that by design never reach the student, such as
  ICD's ``aux_conf``/``aux_reg``, which train only ICD's own modules): those are never measured
  and cost nothing.
  Its *configured* value ``T(i)`` is ``loss_weight x raw value``: the weight from the config,
  **without** the ``weight_schedule`` factor (a warm-up or decay does not distort the
  measurement; the schedule still applies on top of the balanced weight). A term whose schedule
  factor is 0 at an iteration is not computed there and counts as not active.
* **active**: a term is active at an iteration when its value is non-zero *and* its autograd
  graph reaches a student parameter, on at least one rank. A term computed on detached student
  features (ICD's ``mimic`` during ``bypass_iters``) is not active there. Only a term not
  active yet is checked (a walk of its autograd graph); a term that never becomes active and is
  not declared in ``balance_exclude`` keeps every iteration measuring.
* **measurement window** of a term: the ``K = iters`` iterations from its first active one,
  zeros after that included. Terms active from the start are measured over iterations
  ``0 .. K-1``; a delayed term (ICD after ``bypass_iters``, a schedule that starts at 0, an
  internal ramp) is measured once it starts, so it is balanced too. A term that is never
  active is never measured nor changed (ratio 0, scale 1).
* **ratio** of a term: ``sum T(i) / sum D(i)`` over its window (= mean/mean).
* **scale** (``auto_balance``): ``target_ratio / ratio``, capped at 1 with ``only_decrease``;
  1 for a zero or negative ratio. The term then trains as ``scale x loss_weight x schedule x
  raw``. While a term is measured it is computed, logged and added to the total loss at its
  configured value, but passes **no gradient** (to the student or to its own modules): a wrong
  weight cannot damage the student while it is being measured. Before it starts, a term trains
  as configured.
* **final ratio**: ``sum E(i) / sum D(i)`` over the last ``final_iters`` iterations of training,
  ``E(i)`` being the term as added to the loss (scale and schedule included).

An iteration measures only in the first ``iters`` iterations, while a term is not decided yet
(not active yet, or inside its window) and in the last ``final_iters``; in any other iteration
the balancer does no work at all (no device sync, no graph walk, no collective). An iteration
that measures syncs with the device once: the detection loss, the term values and the
"active" flags (the non-zero test on the device, the graph walk on the host) travel in one
float64 vector of ``1 + 2 x number of terms`` numbers. Under DDP that vector is averaged over
the ranks, so every rank takes the same decisions from the same numbers and the state is
identical on every rank. The term keys must be the same on every rank (they are: they depend on
the config and the iteration, not on the data): before the vector, a fixed-size header
(number of terms and a checksum of their names, as max and min over the ranks) is all-reduced
and checked, so ranks with different terms all stop with the same error instead of entering
all-reduces of different sizes.

The state is plain Python (ints, floats, strings) so that it is saved in the checkpoint's
``meta['loss_balance']`` by :class:`~mmkd.engine.hooks.LossBalanceHook` and restored exactly on
``--resume``, in the middle of a measurement window too.
"""
from __future__ import annotations

import copy
import math
import zlib
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from mmengine import dist
from mmengine.logging import print_log
from torch import Tensor

from .progress import TrainProgress

#: Options of ``balance_report`` and their defaults.
REPORT_DEFAULTS: Dict[str, Any] = dict(iters=20, warn_ratio=1.0, final_iters=20)
#: Options of ``auto_balance`` and their defaults (``iters=None``: the report's ``iters``).
AUTO_DEFAULTS: Dict[str, Any] = dict(iters=None, target_ratio=0.5, only_decrease=True, terms={})
#: Options of one entry of ``auto_balance['terms']``.
TERM_OPTIONS = ('enabled', 'target_ratio', 'only_decrease')
STATE_VERSION = 1


# ---- pure functions (unit-tested on their own) --------------------------------------------------
def loss_value(value: Any) -> Optional[Tensor]:
    """A loss entry reduced as mmengine's ``parse_losses`` does: a tensor by its mean, a list of
    tensors by the sum of their means; None for anything else. Returns a detached 0-dim tensor."""
    if isinstance(value, Tensor):
        return value.detach().mean()
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, Tensor) for v in value):
        return sum(v.detach().mean() for v in value)
    return None


def term_key(name: str, part: str) -> str:
    """The loss-dict key of term ``part`` of the distillation loss ``name``: ``part`` itself when
    it already starts with ``loss_``, else ``<name>_<part>`` (``loss_gk`` + ``bg`` ->
    ``loss_gk_bg``)."""
    return part if part.startswith('loss_') else f'{name}_{part}'


def detection_loss(losses: Mapping[str, Any], exclude: Sequence[str],
                   owners: Sequence[str] = ()) -> Tensor:
    """The student's detection loss: the sum of the entries whose key contains ``'loss'``, is
    not in ``exclude`` and is neither a name in ``owners`` nor starts with one and ``_`` (the
    distillation keys), each reduced by :func:`loss_value`.

    Returns:
        A detached 0-dim tensor (0.0 when there is no such entry).
    """
    skip = set(exclude)
    prefixes = tuple(f'{n}_' for n in owners)
    skip.update(owners)
    total: Optional[Tensor] = None
    for key, value in losses.items():
        if 'loss' not in key or key in skip or key.startswith(prefixes):
            continue
        v = loss_value(value)
        if v is not None:
            total = v if total is None else total + v
    if total is None:
        like = next((v for v in losses.values() if isinstance(v, Tensor)), None)
        return like.new_zeros(()) if like is not None else torch.zeros(())
    return total


def balance_scale(ratio: float, target_ratio: float, only_decrease: bool = True) -> float:
    """The factor that brings a term at ``ratio`` x the detection loss to ``target_ratio``.

    ``target_ratio / ratio``; with ``only_decrease`` never above 1 (a term already below the
    target keeps its weight). A zero, negative or non-finite ratio gives 1 (nothing to balance).
    """
    if not math.isfinite(ratio) or ratio <= 0.0:
        return 1.0
    scale = target_ratio / ratio
    return min(scale, 1.0) if only_decrease else scale


def suggested_loss_weight(loss_weight: float, ratio: float, target_ratio: float) -> float:
    """The ``loss_weight`` at which a term measured at ``ratio`` would be at ``target_ratio``."""
    return loss_weight * target_ratio / ratio


def reaches_parameters(value: Tensor, param_ids: 'set') -> bool:
    """True when ``value``'s autograd graph leads to a parameter whose ``id`` is in
    ``param_ids`` (a depth-first walk of ``grad_fn.next_functions``, each node visited once)."""
    fn = value.grad_fn
    if fn is None:
        return False
    seen, stack = set(), [fn]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        var = getattr(node, 'variable', None)  # AccumulateGrad: a leaf tensor
        if var is not None and id(var) in param_ids:
            return True
        stack.extend(nxt for nxt, _ in node.next_functions if nxt is not None)
    return False


def mean_across_ranks(values: Tensor) -> Tensor:
    """Average a 1-D tensor over the ranks of the default process group (in float64; a no-op
    without one). Every rank gets the bit-identical result."""
    out = values.detach().to(torch.float64).clone()
    if dist.get_world_size() > 1:
        dist.all_reduce(out, op='mean')
    return out


def keys_checksum(keys: Sequence[str]) -> int:
    """crc32 of the term names, to check every rank measures the same terms (< 2**32, exact in
    float64 and through an average)."""
    return zlib.crc32('\n'.join(keys).encode('utf-8'))


def same_keys_on_all_ranks(keys: Sequence[str], device: Union[str, torch.device] = 'cpu'
                           ) -> bool:
    """Whether every rank of the default process group measures the same term keys (True
    without one). A fixed-size header ``[n, -n, crc, -crc]`` is all-reduced with ``max``: the
    ranks agree exactly when max and min of both numbers coincide. Every rank gets the same
    answer, and the header has the same size on every rank whatever its keys, so a mismatch is
    found before an all-reduce whose size depends on the number of terms."""
    if dist.get_world_size() <= 1:
        return True
    n, crc = float(len(keys)), float(keys_checksum(keys))
    head = torch.tensor([n, -n, crc, -crc], dtype=torch.float64, device=device)
    dist.all_reduce(head, op='max')
    hi_n, lo_n, hi_c, lo_c = head.tolist()
    return hi_n == -lo_n == n and hi_c == -lo_c == crc


class _MeasureOnly(torch.autograd.Function):
    """Identity in the forward pass, zero gradient in the backward pass. Keeps the term's graph
    (every parameter still takes part, as DDP requires) while it contributes nothing."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: D401
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return torch.zeros_like(grad)


def measure_only(x: Tensor) -> Tensor:
    """``x`` with the same value and no gradient flowing back (see :class:`_MeasureOnly`)."""
    return _MeasureOnly.apply(x)


# ---- options -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TermOptions:
    """auto_balance settings of one term."""
    enabled: bool
    target_ratio: float
    only_decrease: bool


def _check_keys(given: Mapping, valid: Sequence[str], what: str) -> None:
    bad = [k for k in given if k not in valid]
    if bad:
        import difflib
        hints = []
        for b in bad:
            close = difflib.get_close_matches(str(b), list(valid), n=1, cutoff=0.6)
            hints.append(f'{b!r}' + (f' (did you mean {close[0]!r}?)' if close else ''))
        raise ValueError(f'{what}: unknown option(s) {", ".join(hints)}. Valid options: '
                         f'{", ".join(valid)}.')


def _positive_int(value: Any, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f'{what} must be an integer >= {minimum}, got {value!r}')
    return int(value)


def _positive_float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not \
            math.isfinite(float(value)) or float(value) <= 0:
        raise ValueError(f'{what} must be a positive number, got {value!r}')
    return float(value)


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f'{what} must be True or False, got {value!r}')
    return value


def parse_report(spec: Union[bool, Mapping, None]) -> Optional[Dict[str, Any]]:
    """``balance_report`` (True, False/None or a dict of :data:`REPORT_DEFAULTS` keys) ->
    the options dict, or None when off."""
    if spec is None or spec is False:
        return None
    if spec is True:
        spec = {}
    if not isinstance(spec, Mapping):
        raise ValueError(f'DistillDetector balance_report must be True, False or a dict with '
                         f'keys {", ".join(REPORT_DEFAULTS)}; got {spec!r}')
    _check_keys(spec, list(REPORT_DEFAULTS), 'DistillDetector balance_report')
    opts = {**REPORT_DEFAULTS, **dict(spec)}
    opts['iters'] = _positive_int(opts['iters'], 'balance_report.iters')
    opts['warn_ratio'] = _positive_float(opts['warn_ratio'], 'balance_report.warn_ratio')
    opts['final_iters'] = _positive_int(opts['final_iters'], 'balance_report.final_iters', 0)
    return opts


def parse_auto_balance(spec: Union[bool, Mapping, None], loss_names: Sequence[str]
                       ) -> Optional[Dict[str, Any]]:
    """``auto_balance`` (True, False/None or a dict of :data:`AUTO_DEFAULTS` keys) -> the
    options dict, or None when off.

    ``terms`` maps a distillation loss name (``'loss_gk'``: all its keys) or one loss key
    (``'loss_gk_bg'``: a key of that loss) to ``False`` (leave it alone: scale 1, gradient
    during the window as usual) or a dict of :data:`TERM_OPTIONS`.
    """
    if spec is None or spec is False:
        return None
    if spec is True:
        spec = {}
    if not isinstance(spec, Mapping):
        raise ValueError(f'DistillDetector auto_balance must be True, False or a dict with keys '
                         f'{", ".join(AUTO_DEFAULTS)}; got {spec!r}')
    _check_keys(spec, list(AUTO_DEFAULTS), 'DistillDetector auto_balance')
    opts = {**AUTO_DEFAULTS, **dict(spec)}
    if opts['iters'] is not None:
        opts['iters'] = _positive_int(opts['iters'], 'auto_balance.iters')
    opts['target_ratio'] = _positive_float(opts['target_ratio'], 'auto_balance.target_ratio')
    opts['only_decrease'] = _bool(opts['only_decrease'], 'auto_balance.only_decrease')
    terms = opts['terms'] or {}
    if not isinstance(terms, Mapping):
        raise ValueError(f'auto_balance.terms must be a dict {{loss name or key: False or '
                         f'dict({", ".join(TERM_OPTIONS)})}}, got {terms!r}')
    parsed: Dict[str, Dict[str, Any]] = {}
    for key, value in terms.items():
        owner = [n for n in loss_names if key == n or str(key).startswith(n + '_')]
        if not owner:
            raise ValueError(
                f'auto_balance.terms: {key!r} is neither a distillation loss name nor one of its '
                f'keys. Loss names: {", ".join(loss_names) or "(none)"}; the keys of a loss '
                "returning several terms are '<name>_<part>', e.g. 'loss_gk_bg'.")
        if value is False:
            value = dict(enabled=False)
        elif value is True:
            value = {}
        if not isinstance(value, Mapping):
            raise ValueError(f'auto_balance.terms[{key!r}] must be False, True or a dict with '
                             f'keys {", ".join(TERM_OPTIONS)}; got {value!r}')
        _check_keys(value, TERM_OPTIONS, f'auto_balance.terms[{key!r}]')
        entry = dict(value)
        if 'enabled' in entry:
            entry['enabled'] = _bool(entry['enabled'], f'auto_balance.terms[{key!r}].enabled')
        if 'target_ratio' in entry:
            entry['target_ratio'] = _positive_float(
                entry['target_ratio'], f'auto_balance.terms[{key!r}].target_ratio')
        if 'only_decrease' in entry:
            entry['only_decrease'] = _bool(entry['only_decrease'],
                                           f'auto_balance.terms[{key!r}].only_decrease')
        parsed[str(key)] = entry
    opts['terms'] = parsed
    return opts


# ---- the balancer --------------------------------------------------------------------------------
def _new_term() -> Dict[str, Any]:
    # start: step of the first active iteration (-1: not yet); n, sum, det_sum: its window
    return dict(start=-1, n=0, sum=0.0, det_sum=0.0, ratio=0.0, scale=1.0, decided=False,
                warned=False)


class LossBalancer:
    """Measures every distillation term against the detection loss, reports it and, with
    ``auto_balance``, fixes each term's weight once (see the module docstring for every
    definition).

    Built by :class:`~mmkd.models.DistillDetector` (:meth:`from_detector`) and called at the
    end of its ``loss``; :class:`~mmkd.engine.hooks.LossBalanceHook` saves/restores
    :meth:`state_dict` in checkpoints and writes :meth:`report` to
    ``<work_dir>/loss_balance.json``.

    Args:
        loss_weights: ``{loss name: loss_weight}`` of the distillation losses.
        config_keys: ``{loss name: config key of its loss_weight}`` for the suggestions
            (``'model.distill_losses.loss_cwd.loss_weight'``).
        report: parsed ``balance_report`` options (:func:`parse_report`) or None (no warnings).
        auto_balance: parsed ``auto_balance`` options (:func:`parse_auto_balance`) or None.
        student: the student model, to tell whether a term reaches its parameters; None
            skips that check (every non-zero term counts as active).
        excluded: ``{term key: loss name}`` of the terms the losses leave out of the balance
            (``balance_exclude``): never measured, named in the warnings as the siblings a
            ``loss_weight`` also scales.
        term_weights: ``{term key: (option, config key, current value)}`` of the terms weighted
            by an option of their own (``term_weight_keys``): the warning suggests that option
            instead of ``loss_weight``.
    """

    def __init__(self, loss_weights: Mapping[str, float], config_keys: Mapping[str, str],
                 report: Optional[Dict[str, Any]], auto_balance: Optional[Dict[str, Any]],
                 student: Optional[torch.nn.Module] = None,
                 excluded: Optional[Mapping[str, str]] = None,
                 term_weights: Optional[Mapping[str, Tuple[str, str, float]]] = None) -> None:
        self.student = student
        self._param_ids: Optional[frozenset] = None  # ids of the student's parameters, once
        self.loss_weights = dict(loss_weights)
        self.config_keys = dict(config_keys)
        self.excluded = dict(excluded or {})
        self.term_weights = dict(term_weights or {})
        self.report_opts = report
        self.auto = auto_balance
        base = report or REPORT_DEFAULTS
        self.iters = int((auto_balance or {}).get('iters') or base['iters'])
        self.final_iters = int(base['final_iters'])
        self.warn_ratio = float(base['warn_ratio'])
        self.target_ratio = float((auto_balance or AUTO_DEFAULTS)['target_ratio'])
        self.state = self._fresh_state()

    @classmethod
    def from_detector(cls, losses: Mapping[str, Any], loss_cfgs: Any,
                      report: Union[bool, Mapping, None],
                      auto_balance: Union[bool, Mapping, None],
                      student: Optional[torch.nn.Module] = None) -> Optional['LossBalancer']:
        """Build from a DistillDetector's built ``distill_losses`` and their config (dict or
        list form, for the config keys) and its student; None when both the report and
        auto_balance are off or there is no distillation loss."""
        names = list(losses)
        report_opts = parse_report(report)
        auto_opts = parse_auto_balance(auto_balance, names)
        if not names or (report_opts is None and auto_opts is None):
            return None
        if isinstance(loss_cfgs, Mapping) or loss_cfgs is None:
            where = {n: f'model.distill_losses.{n}' for n in names}
        else:
            where = {n: f'model.distill_losses.{i}' for i, n in enumerate(names)}
        keys = {n: f'{where[n]}.loss_weight' for n in names}
        weights = {n: float(getattr(l, 'loss_weight', 1.0)) for n, l in losses.items()}
        excluded = {term_key(n, part): n for n, l in losses.items()
                    for part in getattr(l, 'balance_exclude', ())}
        term_weights = {}
        for n, l in losses.items():
            for part, option in getattr(l, 'term_weight_keys', {}).items():
                value = l.term_weight(part)
                if value is not None and term_key(n, part) not in excluded:
                    term_weights[term_key(n, part)] = (option, f'{where[n]}.{option}', value)
        named = [k for k in (auto_opts or {}).get('terms', {}) if k in excluded]
        if named:
            raise ValueError(
                f'auto_balance.terms: {", ".join(map(repr, named))} is never balanced: '
                f'{type(losses[excluded[named[0]]]).__name__} declares it in balance_exclude '
                "(it trains only the loss's own modules, never the student). Remove it from "
                'auto_balance.terms.')
        balancer = cls(weights, keys, report_opts, auto_opts, student, excluded, term_weights)
        if auto_opts is not None:
            print_log(f'auto_balance: over the first {balancer.iters} active iterations of each '
                      'distillation term, measure it against the detection loss (it passes no '
                      'gradient meanwhile), then fix its weight once so it starts at '
                      f"{auto_opts['target_ratio']} x the detection loss"
                      + (' (weights are only lowered)' if auto_opts['only_decrease'] else ''),
                      logger='current')
        return balancer

    # ---- options of one term ------------------------------------------------------------------
    def term_options(self, key: str, name: str) -> TermOptions:
        """auto_balance settings of term ``key`` of loss ``name``: the key's own entry of
        ``terms``, else the loss name's, else the global ones."""
        if self.auto is None:
            return TermOptions(False, self.target_ratio, True)
        over = {**self.auto['terms'].get(name, {}), **self.auto['terms'].get(key, {})}
        return TermOptions(bool(over.get('enabled', True)),
                           float(over.get('target_ratio', self.auto['target_ratio'])),
                           bool(over.get('only_decrease', self.auto['only_decrease'])))

    # ---- state -----------------------------------------------------------------------------------
    def _fresh_state(self) -> Dict[str, Any]:
        # step: loss() calls measured so far (= the next iteration under a runner)
        # det_first: [sum D, count] over steps 0 .. iters-1 (the report's detection_loss)
        # owners: {term key: loss name}; final: last final_iters iterations of max_iters
        return dict(version=STATE_VERSION, iters=self.iters, step=0, det_first=[0.0, 0],
                    terms={}, owners={}, final=dict(max_iters=-1, n=0, det_sum=0.0, sums={}))

    def state_dict(self) -> Dict[str, Any]:
        """A deep copy of the state: plain ints, floats, bools and strings only (loads under
        ``torch.load(weights_only=True)``)."""
        return copy.deepcopy(self.state)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output exactly (e.g. on ``--resume``)."""
        if not isinstance(state, Mapping) or state.get('version') != STATE_VERSION:
            raise ValueError(f'loss-balance state of an unknown format (version '
                             f'{getattr(state, "get", lambda k: None)("version")!r}, expected '
                             f'{STATE_VERSION}); it cannot be resumed by this mmkd')
        missing = [k for k in self._fresh_state() if k not in state]
        if missing:
            raise ValueError(f'loss-balance state lacks {missing}; it cannot be resumed')
        if int(state['iters']) != self.iters:
            print_log(f"loss balance: the checkpoint measured over iters={state['iters']}, this "
                      f'config says {self.iters}; windows still open use {self.iters}',
                      logger='current', level=30)
        self.state = copy.deepcopy(dict(state))
        self.state['iters'] = self.iters

    # ---- the step --------------------------------------------------------------------------------
    def __call__(self, losses: Dict[str, Any], terms: Mapping[str, str],
                 weights: Mapping[str, float], progress: TrainProgress,
                 training: bool = True) -> Dict[str, Any]:
        """Measure this iteration and return the loss dict with the balanced terms.

        Args:
            losses: the step's loss dict: the student's entries and the weighted distillation
                terms (each ``loss_weight x schedule x raw``, scalar tensors).
            terms: ``{term key: name of the distillation loss it comes from}`` for the terms
                computed this iteration (a loss switched off by its schedule is not in it).
            weights: ``{loss name: loss_weight x schedule factor}`` this iteration.
            progress: where training is (``iter`` and ``max_iters`` are used).
            training: False measures nothing and only applies the chosen scales.

        Returns:
            ``losses`` with every term replaced by ``scale x term`` once its scale is fixed and
            by a gradient-free copy while it is measured (auto_balance on); unchanged otherwise.
        """
        keys = list(terms)
        st = self.state
        decided_before = {k: bool(st['terms'].get(k, {}).get('decided')) for k in keys}
        means = None
        if training:
            if st['step'] == 0 and progress.iter > 0:
                self._started_without_state(progress.iter)
            for key in keys:
                st['terms'].setdefault(key, _new_term())
                st['owners'][key] = terms[key]
            means = self._measure(losses, keys, terms, weights, progress)
        # what each term does this step: decided before it -> scaled; measured in it -> no grad
        applied: Dict[str, Tuple[str, float]] = {}
        for key in keys:
            t = st['terms'].get(key)
            if not self.term_options(key, terms[key]).enabled:
                applied[key] = ('plain', 1.0)
            elif decided_before[key]:
                applied[key] = ('scaled', float(t['scale']))
            elif training and t['start'] >= 0:
                applied[key] = ('measure', 1.0)
            else:
                applied[key] = ('plain', 1.0)
        if means is not None and self._in_final_window(progress):
            d, vals = means
            fin = st['final']
            for key, w in zip(keys, vals):  # the term as added to the loss
                fin['sums'][key] = fin['sums'].get(key, 0.0) + w * applied[key][1]
            fin['n'] += 1
            fin['det_sum'] += d
        if training:
            st['step'] += 1
        out = dict(losses)
        for key, (how, scale) in applied.items():
            if how == 'measure':
                out[key] = measure_only(losses[key])
            elif how == 'scaled' and scale != 1.0:
                out[key] = losses[key] * scale
        return out

    def _in_final_window(self, progress: TrainProgress) -> bool:
        max_iters = progress.max_iters
        if not max_iters or self.final_iters <= 0:
            return False
        fin = self.state['final']
        if fin['max_iters'] != int(max_iters):  # another length (a resumed, longer run): reset
            self.state['final'] = dict(max_iters=int(max_iters), n=0, det_sum=0.0, sums={})
        return progress.iter >= int(max_iters) - self.final_iters

    def _reaches_student(self, value: Tensor) -> bool:
        if self.student is None:
            return True
        if self._param_ids is None:  # the student's parameters do not change: collect once
            self._param_ids = frozenset(id(p) for p in self.student.parameters())
        return reaches_parameters(value, self._param_ids)

    def _measure(self, losses: Dict[str, Any], keys: List[str], terms: Mapping[str, str],
                 weights: Mapping[str, float], progress: TrainProgress
                 ) -> Optional[Tuple[float, List[float]]]:
        """Update the windows with this step's values (averaged over the ranks); returns
        ``(detection loss, [weighted term values])`` or None when this step measures nothing."""
        st = self.state
        step = st['step']
        final = self._in_final_window(progress)
        pending = [not st['terms'][k]['decided'] for k in keys]
        if not (step < self.iters or final or any(pending)):
            return None  # nothing to measure: no all-reduce, no device sync, no graph walk
        det = detection_loss(losses, list(keys) + list(self.excluded), list(self.loss_weights))
        vals = [v.to(det.device, torch.float64) for v in
                [det] + [loss_value(losses[k]) for k in keys]]
        # active flags, only for terms not started yet (the same terms on every rank): the
        # graph walk on the host, the non-zero test on the device (no sync of its own)
        off = vals[0].new_zeros(())
        flags = [(v != 0).to(torch.float64) if st['terms'][k]['start'] < 0
                 and self._reaches_student(losses[k]) else off
                 for k, v in zip(keys, vals[1:])]
        if not same_keys_on_all_ranks(keys, det.device):
            raise RuntimeError(
                f'loss balance: the ranks computed different distillation terms this iteration '
                f'(this rank: {keys}). The measurement needs the same loss keys on every rank; '
                'a loss whose output keys depend on the data cannot be balanced.')
        vec = mean_across_ranks(torch.stack(vals + flags)).tolist()  # the one device sync
        n = len(keys)
        d, means, active = vec[0], vec[1:1 + n], vec[1 + n:1 + 2 * n]
        if step < self.iters:
            st['det_first'][0] += d
            st['det_first'][1] += 1
        decided_now: List[str] = []
        for key, w, act, todo in zip(keys, means, active, pending):
            t = st['terms'][key]
            if not todo:
                continue
            name = terms[key]
            if t['start'] < 0 and act > 0.0:
                t['start'] = step
            if t['start'] < 0:
                continue
            factor = weights[name] / self.loss_weights[name]  # the schedule factor (not 0)
            t['n'] += 1
            t['sum'] += w / factor
            t['det_sum'] += d
            if t['n'] >= self.iters:
                self._decide(key, name)
                decided_now.append(key)
        if step == self.iters - 1:
            self._log_first_window(keys)
        else:
            for key in decided_now:
                self._log_term(key, f'(measured over iterations {st["terms"][key]["start"]}'
                                    f'-{step})')
        return d, means

    def _decide(self, key: str, name: str) -> None:
        t = self.state['terms'][key]
        ratio = t['sum'] / t['det_sum'] if t['det_sum'] > 0 else 0.0
        t['ratio'] = ratio
        opts = self.term_options(key, name)
        if opts.enabled:
            t['scale'] = balance_scale(ratio, opts.target_ratio, opts.only_decrease)
        t['decided'] = True
        if t['det_sum'] <= 0:
            print_log(f'loss balance: the detection loss was not positive while {key} was '
                      'measured; its ratio is undefined and its weight is left as it is',
                      logger='current', level=30)
        if self.report_opts is not None and ratio > self.warn_ratio and not t['warned']:
            t['warned'] = True
            print_log(self.warning_text(key, name, ratio, t['scale']), logger='current',
                      level=30)

    def weight_option(self, key: str, name: str) -> Tuple[str, str, float, List[str]]:
        """The option that weights term ``key`` of loss ``name``: ``(option, config key,
        current value, other terms it also scales)``. The term's own option where its loss
        declares one (``term_weight_keys``, e.g. ``bg_weight``), else the loss's
        ``loss_weight``, which scales every term of the loss (measured or excluded)."""
        if key in self.term_weights:
            option, cfg_key, value = self.term_weights[key]
            return option, cfg_key, value, []
        siblings = [k for k, n in {**self.state['owners'], **self.excluded}.items()
                    if n == name and k != key]
        return 'loss_weight', self.config_keys[name], self.loss_weights[name], siblings

    def warning_text(self, key: str, name: str, ratio: float, scale: float = 1.0) -> str:
        """The one-time warning for a term at ``ratio`` x the detection loss."""
        option, cfg_key, value, also = self.weight_option(key, name)
        opts = self.term_options(key, name)
        # the suggestion lowers the term to the target ratio, or to warn_ratio if that is lower
        target = min(opts.target_ratio, self.warn_ratio)
        weight = suggested_loss_weight(value, ratio, target)
        text = (f'loss balance: {key} is {ratio:.3g}x the student\'s detection loss over its '
                f'first {self.iters} measured iteration(s) (warn_ratio={self.warn_ratio:g}); '
                'it may '
                'dominate training and leave the student worse than without distillation, '
                'above all when fine-tuning a trained student on a small data set. ')
        if opts.enabled and scale != 1.0:
            return text + (f'auto_balance scales it by {scale:.3g} (effective {option} '
                           f'{value * scale:.3g}, {ratio * scale:.3g}x).')
        shared = f' (this also scales {", ".join(also)})' if also else ''
        return text + (f'Suggested {option}: {weight:.3g} instead of {value:g}, which brings it '
                       f'to {target:g}x: set {cfg_key}={weight:.3g}{shared}, or '
                       'turn on model.auto_balance=True.')

    def _started_without_state(self, it: int) -> None:
        if self.auto is not None:
            raise RuntimeError(
                f'auto_balance: training resumed at iteration {it}, but the checkpoint holds no '
                "loss-balance state (its meta has no 'loss_balance'), so the weights chosen over "
                'the first iterations cannot be restored exactly. Resume checkpoints written by '
                "tools/train.py (it adds LossBalanceHook) or add custom_hooks=[dict(type="
                "'LossBalanceHook')]; a run started without that hook must be restarted.")
        print_log(f'loss balance: resumed at iteration {it} without loss-balance state in the '
                  'checkpoint; the report measures from here, not from the first iterations',
                  logger='current', level=30)
        self.state['step'] = it
        self.state['det_first'] = [0.0, 0]

    # ---- logging and the report ----------------------------------------------------------------
    def _log_term(self, key: str, where: str) -> None:
        t = self.state['terms'][key]
        name = self.state['owners'][key]
        line = f'loss balance: {key} = {t["ratio"]:.3g}x the detection loss {where}'
        if self.term_options(key, name).enabled:
            option, _, value, _ = self.weight_option(key, name)
            line += (f'; auto_balance scale {t["scale"]:.4g} ({option} {value:g} -> '
                     f'{value * t["scale"]:.4g}, starts at {t["ratio"] * t["scale"]:.3g}x)')
        print_log(line, logger='current')

    def _log_first_window(self, keys: Sequence[str]) -> None:
        s, n = self.state['det_first']
        det = s / n if n else 0.0
        world = dist.get_world_size()
        parts = []
        for key in keys:
            t = self.state['terms'][key]
            if t['decided']:
                part = f'{key} {t["ratio"]:.3g}x'
                if self.term_options(key, self.state['owners'][key]).enabled:
                    part += f' (scale {t["scale"]:.4g})'
            else:
                part = f'{key} not active yet' if t['start'] < 0 else \
                    f'{key} measured from iteration {t["start"]}'
            parts.append(part)
        print_log(f'loss balance over iterations 0-{self.iters - 1}'
                  + (f' (mean of {world} ranks)' if world > 1 else '')
                  + f': detection loss {det:.4g}; ' + '; '.join(parts), logger='current')

    def report(self) -> Dict[str, Any]:
        """The ``loss_balance.json`` content::

            {"version": 1, "measured_iters": int, "detection_loss": float,
             "terms": {key: {"ratio": float, "scale": float, "warned": bool}},
             "final": {key: float}}

        ``measured_iters``: iterations of the first window actually measured (``iters``, fewer
        when training was shorter); ``detection_loss``: mean D over them; a term's ``ratio`` is
        over its own window (partial if training ended inside it, 0 if it never started);
        ``final``: the final ratios over the last ``final_iters`` iterations.
        """
        st = self.state
        s, n = st['det_first']
        terms = {}
        for key, t in st['terms'].items():
            ratio = t['ratio'] if t['decided'] else (
                t['sum'] / t['det_sum'] if t['det_sum'] > 0 else 0.0)
            terms[key] = dict(ratio=float(ratio), scale=float(t['scale']),
                              warned=bool(t['warned']))
        fin = st['final']
        final = {k: (v / fin['det_sum'] if fin['det_sum'] > 0 else 0.0)
                 for k, v in fin['sums'].items()}
        return dict(version=1, measured_iters=int(n), detection_loss=float(s / n if n else 0.0),
                    terms=terms, final={k: float(v) for k, v in final.items()})

    def finish(self) -> Dict[str, Any]:
        """Log the final ratios and any term whose window never completed; return
        :meth:`report`."""
        rep = self.report()
        fin = self.state['final']
        if rep['final']:
            print_log(f'loss balance over the last {fin["n"]} iterations: '
                      + '; '.join(f'{k} {v:.3g}x' for k, v in rep['final'].items()),
                      logger='current')
        for key, t in self.state['terms'].items():
            if t['decided']:
                continue
            name = self.state['owners'].get(key, key)
            if t['start'] < 0:
                print_log(f'loss balance: {key} was never active (never non-zero with a gradient '
                          "reaching the student's parameters); it was not measured and trained "
                          'as configured. It was checked at every iteration: if it only trains '
                          "the loss's own modules, declare it in the loss's balance_exclude",
                          logger='current')
            elif self.term_options(key, name).enabled:
                print_log(f'auto_balance: {key} was measured over only {t["n"]} of {self.iters} '
                          'iterations before training ended; its weight was not changed (scale 1) '
                          'and it passed no gradient in those iterations',
                          logger='current', level=30)
        return rep
