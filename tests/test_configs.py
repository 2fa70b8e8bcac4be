"""Every shipped config loads; every distillation config builds and runs one loss step on CPU."""
import glob
import os.path as osp

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.logging import MessageHub

from conftest import REPO
from mmkd.datasets import SYNTHETIC_CLASSES

ALL = sorted(p for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True)
             if '_base_' not in p)


def _is_distill(path: str) -> bool:
    """Whether a config's model (after inheritance) is a DistillDetector."""
    if 'DistillDetector' in open(path).read():
        return True
    return Config.fromfile(path).model.get('type') == 'DistillDetector'


KD = [p for p in ALL if _is_distill(p)]


@pytest.mark.parametrize('path', ALL, ids=lambda p: osp.relpath(p, REPO))
def test_config_loads(path):
    cfg = Config.fromfile(path)
    assert 'model' in cfg and 'train_dataloader' in cfg


def test_synthetic_classes_match_generator():
    cfg = Config.fromfile(osp.join(REPO, 'configs/_base_/datasets/synthetic_detection.py'))
    assert tuple(cfg.classes) == SYNTHETIC_CLASSES


@pytest.mark.parametrize('path', KD, ids=lambda p: osp.relpath(p, REPO))
def test_distill_config_builds_and_runs_a_loss_step(path):
    register_all_modules()
    cfg = Config.fromfile(path)
    cfg.model.teacher_ckpt = None  # the real checkpoints are not on CI machines
    cfg.model.student_ckpt = None  # (nor the converged students the GK paper configs start from)
    model = MODELS.build(cfg.model)
    n_cls = len(cfg.get('classes', ())) or 80
    torch.manual_seed(0)
    shapes = [[3, 128, 128], [3, 96, 128]]
    if osp.basename(path).startswith('ssd300'):
        # SSD300's last extra level is a 3x3 valid conv with no input below ~260 px: run the
        # SSD300 configs at their own fixed input size.
        shapes = [[3, 300, 300], [3, 300, 300]]
    student = model.student
    with_mask = hasattr(student, 'mask_head') or getattr(
        getattr(student, 'roi_head', None), 'with_mask', False)  # instance segmentation
    packed = demo_mm_inputs(2, shapes, num_items=[3, 1], num_classes=n_cls,
                            with_mask=bool(with_mask), use_box_type=False)
    data = model.data_preprocessor(packed, True)
    hub = MessageHub.get_current_instance()  # what the runner provides to schedules
    hub.update_info('epoch', 0)
    hub.update_info('iter', 0)
    hub.update_info('max_epochs', cfg.train_cfg.get('max_epochs'))
    hub.update_info('max_iters', cfg.train_cfg.get('max_iters', 1000))
    losses = model(**data, mode='loss')
    kd = [k for k in losses if any(k.startswith(n) for n in model.distill_losses)]
    assert kd, 'no distillation loss in the output'
    assert all(torch.isfinite(losses[k]).all() for k in kd)
