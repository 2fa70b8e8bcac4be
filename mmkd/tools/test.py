"""Evaluate a checkpoint (an mmkd checkpoint, its student twin, or a plain mmdet checkpoint).

    python tools/test.py CONFIG CKPT [--eval bbox [segm]] [--out results.pkl] [--cfg-options ...]
    python -m mmkd.tools.test CONFIG CKPT [same flags]   (after pip install; or mmkd-test)
    python -m mmkd.tools.dist_test CONFIG CKPT NUM_PROCS [same flags]

For a distillation config, the student is evaluated (the teacher is not built and its
checkpoint is not needed). The checkpoint is loaded strictly: a checkpoint that does not fit the
model is an error, not a silent partial load.
"""
import argparse

from mmkd.utils.tool_warnings import quiet_known_warnings  # noqa: E402

quiet_known_warnings()
from mmengine.config import ConfigDict  # noqa: E402
from mmengine.dist import is_main_process  # noqa: E402
from mmengine.model import is_model_wrapper  # noqa: E402

import mmkd  # noqa: E402,F401
from mmkd.apis import (add_common_args, build_runner, check_eval_metrics,  # noqa: E402
                       close_distributed, config_from_args, is_distill, setup_cpu_distributed,
                       student_model_cfg)
from mmkd.apis.runner_setup import check_datasets_not_empty  # noqa: E402
from mmkd.utils.checkpoint import load_strict  # noqa: E402

MMDET2_METRICS = {'bbox', 'segm', 'proposal', 'proposal_fast'}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Test a detector trained with mmkd')
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--eval', nargs='+', metavar='METRIC',
                   help='mmdet-2 style metrics for the COCO evaluator, e.g. --eval bbox segm')
    p.add_argument('--out', help='dump the raw predictions to this .pkl file')
    add_common_args(p)
    return p.parse_args()


def apply_eval_metrics(cfg, metrics) -> None:
    """Point every CocoMetric of ``test_evaluator`` at the mmdet-2 style metric names."""
    unknown = set(metrics) - MMDET2_METRICS
    if unknown:
        raise ValueError(f'--eval {sorted(unknown)}: supported are {sorted(MMDET2_METRICS)}; '
                         'for other evaluators set test_evaluator with --cfg-options')
    evaluators = (cfg.test_evaluator if isinstance(cfg.test_evaluator, list)
                  else [cfg.test_evaluator])
    coco = [e for e in evaluators if str(e.get('type', '')).endswith('CocoMetric')]
    if not coco:
        raise ValueError('--eval needs a CocoMetric test_evaluator in the config')
    for e in coco:
        e.metric = list(metrics)


def coco_metrics(cfg) -> list:
    """Every metric name the config's CocoMetric test evaluators compute."""
    evaluators = (cfg.test_evaluator if isinstance(cfg.test_evaluator, list)
                  else [cfg.test_evaluator])
    names = []
    for e in evaluators:
        if str(e.get('type', '')).endswith('CocoMetric'):
            m = e.get('metric', 'bbox')
            names += [m] if isinstance(m, str) else list(m)
    return names


def main() -> None:
    args = parse_args()
    cfg = config_from_args(args)
    if is_distill(cfg):
        cfg.model = student_model_cfg(cfg)
        if cfg.model.get('data_preprocessor') is None:
            raise ValueError('the student config has no data_preprocessor')
    if args.eval:
        apply_eval_metrics(cfg, args.eval)
    if args.out:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError('--out must end with .pkl')
        dump = ConfigDict(type='DumpDetResults', out_file_path=args.out)
        cfg.test_evaluator = (list(cfg.test_evaluator) if isinstance(cfg.test_evaluator, list)
                              else [cfg.test_evaluator]) + [dump]
    cfg.load_from = None  # loaded strictly below instead of mmengine's non-strict load
    setup_cpu_distributed(cfg, args.launcher)

    runner = build_runner(cfg)
    ok, model = False, None
    try:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        # up front, before any inference: metrics the model can produce, a non-empty test
        # set, and a checkpoint that fits (strict)
        check_eval_metrics(runner, coco_metrics(cfg))
        check_datasets_not_empty(runner, ('test', ))
        load_strict(model, args.checkpoint, role='test')
        runner._has_loaded = True
        metrics = runner.test()
        if is_main_process():  # every rank has the metrics; print them once
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
        ok = True
    finally:
        del runner, model  # drop the DDP wrapper before the process group goes
        close_distributed(ok)


if __name__ == '__main__':
    main()
