"""End to end, asserted from what the run wrote: the logged loss values of every distillation
term, and the prediction files of the two checkpoint kinds (tools/train.py, tools/test.py).

The training log's config dump names every loss, so searching the log text for a loss name
proves nothing; these tests read mmengine's scalar log (``<work_dir>/<timestamp>/vis_data/
scalars.json``, one JSON object per logged step) and the raw predictions ``--out`` dumps.
"""
import glob
import json
import math
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.fileio import load

from conftest import KD_CFG, REPO, STUDENT_CFG, data_options, run_tool

ITERS_PER_EPOCH = 4  # 12 training images, 3 per batch


@pytest.fixture(scope='module')
def one_epoch(tmp_path_factory, synthetic_data, teacher_ckpt):
    """One epoch of KD_CFG, a loss line per iteration, both checkpoint kinds, no validation."""
    work = tmp_path_factory.mktemp('evidence')
    run_tool(['tools/train.py', KD_CFG, '--work-dir', str(work), '--cfg-options',
              *data_options(synthetic_data), f'model.teacher_ckpt={teacher_ckpt}',
              'train_cfg.max_epochs=1', 'train_cfg.val_interval=10',
              'default_hooks.checkpoint.interval=1', 'default_hooks.logger.interval=1',
              'param_scheduler.0.end=4'])
    return work


def read_scalars(work_dir) -> list:
    """The training steps mmengine logged to ``vis_data/scalars.json`` (lines with a loss), by
    their ``step`` (the iteration; mmengine >= 0.8 also writes it as ``iter``)."""
    files = glob.glob(osp.join(str(work_dir), '*', 'vis_data', 'scalars.json'))
    assert len(files) == 1, f'expected one scalars.json under {work_dir}, found {files}'
    with open(files[0]) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    return [x for x in lines if 'loss' in x]


def test_every_distillation_term_is_logged_positive_and_finite_at_every_step(one_epoch):
    names = list(Config.fromfile(osp.join(REPO, KD_CFG)).model.distill_losses)
    steps = read_scalars(one_epoch)
    assert [s['step'] for s in steps] == list(range(1, ITERS_PER_EPOCH + 1)), steps
    for name in names:
        terms = [k for k in steps[0] if k == name or k.startswith(name + '_')]
        assert terms, f'{name} logged no value; logged keys: {sorted(steps[0])}'
        for s in steps:
            for k in terms:
                assert math.isfinite(s[k]) and s[k] > 0, f'iteration {s["step"]}: {k} = {s[k]}'
    # the student's own detection losses are there too, and the total includes the terms
    for s in steps:
        assert s['loss_cls'] > 0 and s['loss_rpn_cls'] > 0
        kd = sum(v for k, v in s.items() if any(k.startswith(n) for n in names))
        assert s['loss'] > kd > 0


def _predict(config: str, ckpt: str, out: str, data: dict) -> list:
    run_tool(['tools/test.py', config, ckpt, '--out', out, '--work-dir',
              osp.join(osp.dirname(out), osp.basename(out)[:-4]), '--cfg-options',
              *data_options(data)])
    return load(out)


def test_full_and_exported_student_checkpoints_predict_exactly_the_same(one_epoch,
                                                                       synthetic_data):
    """The mmkd checkpoint (student + distillation modules) under the distillation config and
    the ``_student.pth`` twin under the plain student config give identical raw predictions,
    box for box (not merely the same mAP, which is 0 for both this early)."""
    work = str(one_epoch)
    full = _predict(KD_CFG, osp.join(work, 'epoch_1.pth'), osp.join(work, 'full.pkl'),
                    synthetic_data)
    twin = _predict(STUDENT_CFG, osp.join(work, 'epoch_1_student.pth'),
                    osp.join(work, 'twin.pkl'), synthetic_data)
    assert len(full) == len(twin) == 6  # the validation images
    assert sum(len(r['pred_instances']['scores']) for r in full) > 0, 'no predictions at all'
    for a, b in zip(full, twin):
        assert a['img_id'] == b['img_id']
        for key in ('bboxes', 'scores', 'labels'):
            x, y = a['pred_instances'][key], b['pred_instances'][key]
            assert torch.equal(torch.as_tensor(x), torch.as_tensor(y)), (a['img_id'], key)
