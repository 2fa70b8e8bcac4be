"""Config handling of the tools: hooks, AMP, CPU distributed settings, --eval mapping."""
import argparse
import json
import math
import os
import os.path as osp
import subprocess
import sys
from unittest import mock

import pytest
import torch
from mmengine.config import Config

from conftest import KD_CFG, REPO, STUDENT_CFG, tool_env
from mmkd.apis import (add_common_args, add_mmkd_hooks, config_from_args, enable_amp, load_config,
                       setup_cpu_distributed)
from mmkd.apis.runner_setup import check_checkpoint_classes, count_dropped_boxes


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
    # several optimisers, long form (one wrapper per key, as the ICD configs write it)
    icd = _cfg('configs/synthetic/kd_icd_r34w32_r18w16_12e_synthetic.py')
    assert enable_amp(icd)
    wrappers = {k: v for k, v in icd.optim_wrapper.items() if isinstance(v, dict)}
    assert set(wrappers) == {'student', 'distill'}
    assert {w.type for w in wrappers.values()} == {'AmpOptimWrapper'}
    assert icd.optim_wrapper.constructor == 'DistillOptimWrapperConstructor'
    # short form: the inherited single-optimiser keys plus the extra wrapper
    sgd, adam = dict(type='SGD', lr=0.01), dict(type='AdamW', lr=1e-4)
    short = Config(dict(optim_wrapper=dict(
        type='OptimWrapper', optimizer=sgd, constructor='DistillOptimWrapperConstructor',
        distill=dict(type='OptimWrapper', optimizer=adam, params=['distill_losses']))))
    assert enable_amp(short)
    assert short.optim_wrapper.type == short.optim_wrapper.distill.type == 'AmpOptimWrapper'


def test_both_local_rank_spellings_and_work_dir_default():
    p = argparse.ArgumentParser()
    p.add_argument('config')
    add_common_args(p)
    had = os.environ.get('LOCAL_RANK')
    # config_from_args writes os.environ itself: restore the whole environment afterwards, or
    # LOCAL_RANK=1 leaks into every later test and the tools they start
    with mock.patch.dict(os.environ):
        os.environ.pop('LOCAL_RANK', None)
        cfg = config_from_args(p.parse_args([STUDENT_CFG, '--local-rank=1']))
        assert os.environ['LOCAL_RANK'] == '1'
    assert os.environ.get('LOCAL_RANK') == had
    assert cfg.work_dir.endswith('work_dirs/faster_rcnn_r18w16_fpn_12e_synthetic')
    assert p.parse_args([STUDENT_CFG, '--local_rank', '3']).local_rank == 3


def test_cpu_distributed_settings_without_launcher_are_untouched():
    cfg = _cfg(STUDENT_CFG)
    assert not setup_cpu_distributed(cfg, 'none')
    assert 'model_wrapper_cfg' not in cfg


def _test_tool():
    from mmkd.tools import test  # the code of tools/test.py
    return test


def test_mmdet2_eval_flag_sets_coco_metrics():
    tool = _test_tool()
    cfg = _cfg(STUDENT_CFG)
    tool.apply_eval_metrics(cfg, ['bbox', 'segm'])
    assert cfg.test_evaluator.metric == ['bbox', 'segm']
    with pytest.raises(ValueError, match='supported are'):
        tool.apply_eval_metrics(cfg, ['mAP'])


# ---- clear errors for misspelt names -------------------------------------------------------
def test_misspelt_top_level_cfg_option_is_an_error_with_close_matches():
    with pytest.raises(ValueError) as err:
        load_config(KD_CFG, {'trian_cfg.max_epochs': 1})
    msg = str(err.value)
    assert "'trian_cfg' is not an entry of the config (did you mean train_cfg" in msg
    assert 'silently ignored' in msg
    cfg = load_config(KD_CFG, {'train_cfg.max_epochs': 1, 'resume': True,
                               'model_wrapper_cfg': dict(type='MMDistributedDataParallel')})
    assert cfg.train_cfg.max_epochs == 1  # real entries and Runner settings still work


def test_misspelt_loss_option_names_the_loss_and_its_options():
    from mmdet.registry import MODELS
    cfg = Config.fromfile(osp.join(REPO, KD_CFG)).model
    cfg.teacher_ckpt = None
    cfg.distill_losses.loss_kd_fpn['adaptr'] = cfg.distill_losses.loss_kd_fpn.pop('adapter', None)
    with pytest.raises(TypeError) as err:
        MODELS.build(cfg)
    msg = str(err.value)
    assert "distill loss 'loss_kd_fpn' (FeatureImitationLoss): unknown option 'adaptr'" in msg
    assert "did you mean 'adapter'" in msg
    for option in ('adapter', 'fg_mask', 'levels', 'loss_weight', 'weight_schedule'):
        assert option in msg.split('Valid options:')[1]


def test_visualize_pgm_help_ends_its_sentences():
    proc = subprocess.run([sys.executable, 'tools/visualize_pgm.py', '--help'], cwd=REPO,
                          env=tool_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    description = proc.stdout.split('positional arguments')[0]
    assert ' '.join(description.split()).endswith(
        'in a 2-D projection (student vs teacher space).'), description
    assert 'training checkpoint' in proc.stdout  # the positional arguments are explained


# ---- data set checks of the tools ------------------------------------------------------------
def test_boxes_mmdet_drops_are_counted(tmp_path, synthetic_data):
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    register_all_modules()
    ann = json.loads(open(synthetic_data['train_ann']).read())
    img = ann['images'][0]
    cat = ann['categories'][0]['id']
    nxt = max(a['id'] for a in ann['annotations']) + 1
    bad = [[10, 10, 0, 5], [10, 10, -3, 5], [float('nan'), 2, 5, 5],
           [img['width'] + 5, 2, 5, 5]]  # zero width, negative width, NaN, outside
    ann['annotations'] += [dict(id=nxt + i, image_id=img['id'], category_id=cat, bbox=b,
                                area=(b[2] * b[3]) if all(map(math.isfinite, b)) else 1.0,
                                iscrowd=0) for i, b in enumerate(bad)]
    path = tmp_path / 'train.json'
    path.write_text(json.dumps(ann))
    cfg = Config.fromfile(osp.join(REPO, STUDENT_CFG)).train_dataloader.dataset
    cfg.update(ann_file=str(path), data_root=synthetic_data['data_root'])
    dataset = DATASETS.build(cfg)
    counts = count_dropped_boxes(dataset)
    good = len(ann['annotations']) - len(bad)
    assert (counts['total'], counts['dropped']) == (good + 4, 4)
    assert (counts['small'], counts['non_finite'], counts['outside']) == (2, 1, 1)
    kept = sum(len(dataset.get_data_info(i)['instances']) for i in range(len(dataset)))
    assert kept == good  # exactly the four were dropped by mmdet


def test_checkpoint_classes_checked_in_name_and_order():
    class Model:
        teacher_ckpt = 't.pth'
        teacher_ckpt_meta = dict(dataset_meta=dict(classes=('a', 'b', 'c')))
        student_ckpt_meta = {}
    check_checkpoint_classes(Model(), ['a', 'b', 'c'])
    with pytest.raises(ValueError, match=r"'t.pth' was trained on classes \['a', 'b', 'c'\] "
                                         r"but the training data set has \['c', 'b', 'a'\]: "
                                         r'the same names in another order'):
        check_checkpoint_classes(Model(), ['c', 'b', 'a'])
    with pytest.raises(ValueError, match=r"only the checkpoint has \['c'\], only the data set "
                                         r"has \['d'\]"):
        check_checkpoint_classes(Model(), ['a', 'b', 'd'])

    class FeatureOnly(Model):  # no loss compares class outputs: a warning, not an error
        distill_losses = {'loss_feat': type('L', (), {'requires_same_classes': False})()}
    check_checkpoint_classes(FeatureOnly(), ['c', 'b', 'a'])
    FeatureOnly.student_ckpt, FeatureOnly.student_ckpt_meta = 's.pth', Model.teacher_ckpt_meta
    with pytest.raises(ValueError, match="student checkpoint 's.pth'"):  # the student's own
        check_checkpoint_classes(FeatureOnly(), ['c', 'b', 'a'])
