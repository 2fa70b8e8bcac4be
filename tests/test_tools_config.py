"""Config handling of the tools: hooks, AMP, CPU distributed settings, --eval mapping."""
import argparse
import importlib.util
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from conftest import KD_CFG, REPO, STUDENT_CFG
from mmkd.apis import (add_common_args, add_mmkd_hooks, config_from_args, enable_amp,
                       setup_cpu_distributed)


def _cfg(path):
    return Config.fromfile(osp.join(REPO, path))


def test_hooks_added_once_and_only_where_they_belong():
    kd = _cfg(KD_CFG)
    assert add_mmkd_hooks(kd) == []  # the distill runtime base already lists both
    plain = _cfg(STUDENT_CFG)
    assert add_mmkd_hooks(plain) == ['EpochSeedHook']
    assert add_mmkd_hooks(plain) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU-only message')
def test_amp_on_cpu_fails_early_with_the_fix():
    with pytest.raises(RuntimeError, match='drop --amp'):
        enable_amp(_cfg(STUDENT_CFG))


def test_amp_switches_the_optim_wrapper_or_every_wrapper_of_a_dict(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)  # only the config is changed
    cfg = _cfg(STUDENT_CFG)
    assert enable_amp(cfg) and cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert not enable_amp(cfg)
    icd = _cfg('configs/synthetic/kd_icd_r34w32_r18w16_12e_synthetic.py')
    assert enable_amp(icd)
    assert icd.optim_wrapper.type == icd.optim_wrapper.distill.type == 'AmpOptimWrapper'
    assert icd.optim_wrapper.constructor == 'DistillOptimWrapperConstructor'


def test_both_local_rank_spellings_and_work_dir_default(monkeypatch):
    p = argparse.ArgumentParser()
    p.add_argument('config')
    add_common_args(p)
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    args = p.parse_args([STUDENT_CFG, '--local-rank=1'])
    cfg = config_from_args(args)
    import os
    assert os.environ['LOCAL_RANK'] == '1'
    assert cfg.work_dir.endswith('work_dirs/faster_rcnn_r18w16_fpn_12e_synthetic')
    assert p.parse_args([STUDENT_CFG, '--local_rank', '3']).local_rank == 3


def test_cpu_distributed_settings_without_launcher_are_untouched():
    cfg = _cfg(STUDENT_CFG)
    assert not setup_cpu_distributed(cfg, 'none')
    assert 'model_wrapper_cfg' not in cfg


def _test_tool():
    spec = importlib.util.spec_from_file_location('mmkd_test_tool', osp.join(REPO, 'tools/test.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_mmdet2_eval_flag_sets_coco_metrics():
    tool = _test_tool()
    cfg = _cfg(STUDENT_CFG)
    tool.apply_eval_metrics(cfg, ['bbox', 'segm'])
    assert cfg.test_evaluator.metric == ['bbox', 'segm']
    with pytest.raises(ValueError, match='supported are'):
        tool.apply_eval_metrics(cfg, ['mAP'])
