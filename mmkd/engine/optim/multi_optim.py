"""Two (or more) optimisers in one distillation run, e.g. SGD for the student and AdamW for a
method's distillation-side modules (ICD trains its instance encoder and adapters that way).

mmengine keeps several optimisers in an :class:`~mmengine.optim.OptimWrapperDict`, checkpoints
and resumes them, and drives a ``param_scheduler`` dict keyed by the same names; what it leaves
to the model is the training step. :func:`train_step_multi_optim` runs one forward and one
backward for the summed loss and then steps every optimiser. Under AMP all wrappers share the
first wrapper's GradScaler (one scale, unscaled once per optimiser, updated once per step), which
is how PyTorch prescribes mixed precision with several optimisers.
"""
from __future__ import annotations

from contextlib import ExitStack
from typing import Dict, List, Union

import torch
from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.model import is_model_wrapper
from mmengine.optim import (AmpOptimWrapper, DefaultOptimWrapperConstructor, OptimWrapper,
                            OptimWrapperDict)
from torch import nn


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class DistillOptimWrapperConstructor:
    """Build an ``OptimWrapperDict`` whose wrappers own disjoint parts of the model.

    Config (every key other than ``constructor`` names one optimiser wrapper)::

        optim_wrapper = dict(
            constructor='DistillOptimWrapperConstructor',
            student=dict(type='OptimWrapper',
                         optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=1e-4)),
            distill=dict(type='OptimWrapper', params=['distill_losses'],
                         optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
                         clip_grad=dict(max_norm=0.01)))

    * ``params``: module names (as in ``model.named_modules()``) whose parameters this wrapper
      optimises. Exactly one wrapper has no ``params``: it takes every trainable parameter the
      others do not claim (the student). A wrapper may carry its own ``paramwise_cfg``.
    * Short form: when ``optim_wrapper`` keeps its usual single-optimiser keys (``type``,
      ``optimizer``, ``clip_grad``, ``paramwise_cfg``...), those make the ``student`` wrapper
      and every key holding a wrapper config adds one more. A config inheriting an mmdet
      recipe then only adds ``constructor`` and, say, ``distill=dict(...)``.
    * Wrapper order is config order (``student`` first in the short form); the first one
      drives backward (and the AMP loss scale).
    * ``param_scheduler`` may then be a dict with the same keys, one schedule per optimiser.

    Args:
        optim_wrapper_cfg: ``{name: wrapper config}``, or the short form above.
        paramwise_cfg: the ``student`` wrapper's, in the short form; None otherwise (give each
            wrapper its own).
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Union[dict, None] = None) -> None:
        cfgs = dict(optim_wrapper_cfg)
        scope = cfgs.pop('_scope_', None)  # added by mmengine for `mmdet::` bases
        if 'optimizer' in cfgs:  # short form: the top-level keys are the student's wrapper
            extra = {k: dict(v) for k, v in cfgs.items()
                     if isinstance(v, dict) and 'optimizer' in v}
            student = {k: v for k, v in cfgs.items() if k not in extra}
            if scope is not None:
                student['_scope_'] = scope
            if paramwise_cfg:
                student['paramwise_cfg'] = paramwise_cfg
            cfgs = {'student': student, **extra}
        elif paramwise_cfg:
            raise ValueError('DistillOptimWrapperConstructor: put paramwise_cfg inside each '
                             'optimiser wrapper (e.g. optim_wrapper.student.paramwise_cfg).')
        cfgs = {k: dict(v) if isinstance(v, dict) else v for k, v in cfgs.items()}
        bad = [k for k, v in cfgs.items() if 'optimizer' not in v]
        if bad or not cfgs:
            raise ValueError(
                f'DistillOptimWrapperConstructor: {bad or "no"} optimiser wrapper(s) without an '
                "'optimizer'. Every key of optim_wrapper besides 'constructor' must be a wrapper "
                "config such as dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.02)).")
        rest = [k for k, v in cfgs.items() if not v.get('params')]
        if len(rest) != 1:
            raise ValueError(f'DistillOptimWrapperConstructor: exactly one wrapper must omit '
                             f"'params' and take the remaining parameters; got {rest}.")
        self.cfgs, self.rest = cfgs, rest[0]

    def __call__(self, model: nn.Module) -> OptimWrapperDict:
        if is_model_wrapper(model):
            model = model.module
        modules = dict(model.named_modules())
        claimed: Dict[int, str] = {}
        wrappers: Dict[str, OptimWrapper] = {}
        for name, cfg in self.cfgs.items():
            if name == self.rest:
                continue
            prefixes = list(cfg.pop('params'))
            missing = [p for p in prefixes if p not in modules]
            if missing:
                close = sorted(m for m in modules if m and m.split('.')[0] in
                               {p.split('.')[0] for p in missing})[:8]
                raise KeyError(f'optim_wrapper.{name}.params: no module named {missing} in the '
                               f'model. Modules there include: {close or list(modules)[:8]}')
            part = nn.ModuleList([modules[p] for p in prefixes])
            for p in part.parameters():
                if id(p) in claimed:
                    raise ValueError(f'a parameter is claimed by both optim_wrapper.{name} and '
                                     f'optim_wrapper.{claimed[id(p)]}')
                claimed[id(p)] = name
            if not any(p.requires_grad for p in part.parameters()):
                raise ValueError(f'optim_wrapper.{name}: {prefixes} have no trainable parameters')
            wrappers[name] = self._build(cfg, part)
        wrappers[self.rest] = self._build(dict(self.cfgs[self.rest]), model, exclude=claimed)
        return OptimWrapperDict(**{k: wrappers[k] for k in self.cfgs})

    @staticmethod
    def _build(cfg: dict, module: nn.Module, exclude: Union[Dict[int, str], None] = None
               ) -> OptimWrapper:
        paramwise = cfg.pop('paramwise_cfg', None)
        wrapper = DefaultOptimWrapperConstructor(cfg, paramwise)(module)
        if exclude:  # drop the parameters other wrappers own (before any step: no state yet)
            groups = []
            for g in wrapper.optimizer.param_groups:
                g['params'] = [p for p in g['params'] if id(p) not in exclude]
                if g['params']:
                    groups.append(g)
            wrapper.optimizer.param_groups[:] = groups
        return wrapper


def train_step_multi_optim(model: nn.Module, data: Union[dict, tuple, list],
                           optim_wrapper: OptimWrapperDict) -> Dict[str, torch.Tensor]:
    """One training step with every optimiser of ``optim_wrapper`` (see the module docstring).

    Args:
        model: the model whose forward runs (a DDP wrapper or the bare model).
        data: a batch from the dataloader.
        optim_wrapper: the wrappers; the first drives backward and gradient accumulation.

    Returns:
        The log variables, as ``BaseModel.train_step`` returns them.
    """
    module = model.module if is_model_wrapper(model) else model
    wrappers: List[OptimWrapper] = list(optim_wrapper.values())
    amp = [isinstance(w, AmpOptimWrapper) for w in wrappers]
    if any(amp) and not all(amp):
        raise TypeError('mixing AmpOptimWrapper and OptimWrapper in one OptimWrapperDict is not '
                        'supported; use --amp (which converts all of them) or none.')
    with ExitStack() as stack:
        for w in wrappers:
            stack.enter_context(w.optim_context(model))
        data = module.data_preprocessor(data, True)
        losses = model._run_forward(data, mode='loss')
    parsed, log_vars = module.parse_losses(losses)
    lead = wrappers[0]
    lead.backward(lead.scale_loss(parsed))
    for w in wrappers[1:]:
        w._inner_count += 1  # keep accumulation counters and schedulers' view in step
    if lead.should_update():
        if all(amp):
            scaler = lead.loss_scaler
            for w in wrappers:
                if w.clip_grad_kwargs:
                    scaler.unscale_(w.optimizer)
                    w._clip_grad()
                scaler.step(w.optimizer)
            scaler.update(lead._scale_update_param)
        else:
            for w in wrappers:
                w.step()
        for w in wrappers:
            w.zero_grad()
    return log_vars
