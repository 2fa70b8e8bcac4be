"""Shared fixtures: a tiny synthetic data set, tiny configs and a teacher checkpoint."""
from __future__ import annotations

import os
import os.path as osp
import subprocess
import sys
from typing import List

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

from mmengine.config import Config  # noqa: E402

import mmkd  # noqa: E402,F401

STUDENT_CFG = 'configs/synthetic/faster_rcnn_r18w16_fpn_12e_synthetic.py'
TEACHER_CFG = 'configs/synthetic/faster_rcnn_r34w32_fpn_12e_synthetic.py'
KD_CFG = 'configs/synthetic/kd_feat_kl_r34w32_r18w16_12e_synthetic.py'
#: A RetinaNet small enough for CPU unit tests (4 classes, 32-channel FPN).
TINY_RETINA = dict(config='mmdet::retinanet/retinanet_r18_fpn_1x_coco.py',
                   backbone=dict(init_cfg=None, base_channels=16),
                   neck=dict(in_channels=[16, 32, 64, 128], out_channels=32),
                   bbox_head=dict(num_classes=4, in_channels=32, feat_channels=32,
                                  stacked_convs=1))


def pytest_configure(config) -> None:
    config.addinivalue_line(
        'markers', 'gpu: needs a CUDA device; skipped without one (tests/test_gpu.py, run on a '
        'GPU host by tools/gpu_check.sh: pytest -m gpu)')


@pytest.fixture(scope='session')
def synthetic_data(tmp_path_factory) -> dict:
    """12 train / 6 val images, 64-96 px, some of them empty."""
    from mmkd.datasets.synthetic import generate_synthetic_coco
    out = tmp_path_factory.mktemp('synthetic')
    return generate_synthetic_coco(str(out), num_train=12, num_val=6, image_size=(64, 96),
                                   seed=3, max_objects=5)


def data_options(data: dict, img_scale: int = 96) -> List[str]:
    """--cfg-options that point a synthetic config at ``data`` and shrink it for tests."""
    root = data['data_root'].rstrip('/') + '/'
    resize = f'({img_scale},{img_scale})'
    return [
        f'train_dataloader.dataset.data_root={root}',
        f'val_dataloader.dataset.data_root={root}',
        f'test_dataloader.dataset.data_root={root}',
        f'val_evaluator.ann_file={data["val_ann"]}',
        f'test_evaluator.ann_file={data["val_ann"]}',
        f'train_dataloader.dataset.pipeline.2.scale={resize}',
        f'val_dataloader.dataset.pipeline.1.scale={resize}',
        f'test_dataloader.dataset.pipeline.1.scale={resize}',
        'train_dataloader.batch_size=3', 'val_dataloader.batch_size=3',
        'test_dataloader.batch_size=3',
    ]


def apply_data_options(cfg: Config, data: dict) -> Config:
    """In-process version of :func:`data_options`."""
    from mmengine.config import DictAction
    opts = {}
    for item in data_options(data):
        k, v = item.split('=', 1)
        opts[k] = DictAction._parse_iterable(v)
    cfg.merge_from_dict(opts)
    return cfg


@pytest.fixture(scope='session')
def teacher_ckpt(tmp_path_factory) -> str:
    """A real checkpoint file of the synthetic teacher (random weights, fixed seed)."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    torch.manual_seed(0)
    cfg = Config.fromfile(osp.join(REPO, TEACHER_CFG))
    model = MODELS.build(cfg.model)
    model.init_weights()
    path = str(tmp_path_factory.mktemp('teacher') / 'teacher.pth')
    torch.save(dict(meta=dict(dataset_meta=dict(classes=list(cfg.classes))),
                    state_dict=model.state_dict()), path)
    return path


def student_roi_step(model, inputs, samples, seed: int):
    """Re-run a DistillDetector's student loss with ``seed`` and return its RoI step:
    ``(sampling_results, rois, pos_idx, roi_outputs)``, with ``pos_idx`` the row indices of the
    positive RoIs in ``rois``. Seeded like the distiller's own step, it samples the same RoIs."""
    import copy

    from mmdet.structures.bbox import bbox2roi

    from mmkd.models.utils import MethodRecorder
    torch.manual_seed(seed)
    with MethodRecorder(model.student.roi_head, 'bbox_loss') as rec:
        model.student.loss(inputs, copy.deepcopy(samples))
    args, _, out = rec.calls[0]
    sres = args[1]
    idx, off = [], 0
    for r in sres:
        idx += list(range(off, off + len(r.pos_priors)))
        off += len(r.priors)
    return sres, bbox2roi([r.priors for r in sres]), idx, out


def tool_env(env: dict = None) -> dict:
    """The environment the tools run in: this checkout first on the path, one thread, and no
    launcher variables leaking in from the test process (LOCAL_RANK, RANK, MASTER_PORT, ...)."""
    base = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    return dict(base, PYTHONPATH=REPO, OMP_NUM_THREADS='1', **(env or {}))


#: Variables torchrun sets for its workers; a tool started by a test must not inherit them.
LAUNCHER_VARS = ('LOCAL_RANK', 'RANK', 'WORLD_SIZE', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR',
                 'MASTER_PORT', 'GROUP_RANK', 'ROLE_RANK', 'TORCHELASTIC_RUN_ID', 'PORT')


def run_tool(args: List[str], timeout: int = 600, env: dict = None,
             expect_fail: bool = False) -> subprocess.CompletedProcess:
    """Run a repo tool with this interpreter; fail with its output on a non-zero exit (on a
    zero exit with ``expect_fail``)."""
    cmd = args if args[0] == 'bash' else [sys.executable] + args
    proc = subprocess.run(cmd, cwd=REPO, env=tool_env(env), capture_output=True, text=True,
                          timeout=timeout)
    if (proc.returncode != 0) != expect_fail:
        raise AssertionError(f'{" ".join(cmd)} exited {proc.returncode}\n--- stdout ---\n'
                             f'{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}')
    return proc
