"""SSD heads predict under mmdet 3.3.0 (mmdet #11780: BaseDenseHead reads ``self.loss_cls``,
which SSDHead never creates): mmkd's add_missing_loss_cls, applied by DistillDetector and by the
runner mmkd's tools build."""
import copy
import os.path as osp

import torch
from mmengine.config import Config

from conftest import REPO, TINY_RETINA, data_options

SSD = 'configs/synthetic/ssd160_r18w16_12e_synthetic.py'
SSD_KD = 'configs/synthetic/kd_dicod_r18w16cls_ssd160_r18w16_12e_synthetic.py'


def _build(model_cfg):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    torch.manual_seed(0)
    return MODELS.build(copy.deepcopy(model_cfg))


def _batch(model, n=2, size=160):
    from mmdet.structures import DetDataSample
    samples = [DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                           scale_factor=(1.0, 1.0)))
               for _ in range(n)]
    g = torch.Generator().manual_seed(1)
    data = dict(inputs=[torch.rand(3, size, size, generator=g) * 255 for _ in range(n)],
                data_samples=samples)
    return model.data_preprocessor(data, False)


def test_ssd_student_predicts_and_keeps_its_state_dict():
    from mmkd.models.utils.dense_head_compat import add_missing_loss_cls
    model = _build(Config.fromfile(osp.join(REPO, SSD)).model).eval()
    keys = list(model.state_dict())
    assert not hasattr(model.bbox_head, 'loss_cls')  # mmdet's SSDHead: the cause of the bug
    assert add_missing_loss_cls(model) == ['bbox_head']
    assert add_missing_loss_cls(model) == []  # once only
    data = _batch(model)
    with torch.no_grad():
        out = model.predict(data['inputs'], data['data_samples'])
    assert len(out) == 2
    for res in out:
        boxes, scores = res.pred_instances.bboxes, res.pred_instances.scores
        assert boxes.shape[1] == 4 and len(boxes) <= 100  # test_cfg.max_per_img
        assert torch.isfinite(boxes).all() and ((scores >= 0.02) & (scores <= 1)).all()
    assert list(model.state_dict()) == keys  # nothing new in checkpoints: plain mmdet loads them
    # heads with a loss_cls of their own are left alone
    retina = _build(_retina())
    assert add_missing_loss_cls(retina) == []


def _retina():
    from mmkd.utils.config import load_model_cfg
    return load_model_cfg(TINY_RETINA, 'student')


def test_distill_detector_with_an_ssd_student_predicts():
    cfg = Config.fromfile(osp.join(REPO, SSD_KD))
    cfg.model.teacher_ckpt = None  # random classifier: only prediction is under test
    model = _build(cfg.model).eval()
    assert model.student.bbox_head.loss_cls is None
    data = _batch(model, 1)
    with torch.no_grad():
        out = model.predict(data['inputs'], data['data_samples'])
    assert out[0].pred_instances.bboxes.shape[1] == 4


def test_tools_runner_evaluates_an_ssd_detector(synthetic_data, tmp_path):
    """tools/test.py's path: mmkd's build_runner, then a COCO evaluation of the SSD student."""
    from mmkd.apis import build_runner, load_config
    from mmkd.benchmark.runs import parse_options
    opts = parse_options([o for o in data_options(synthetic_data)
                          if 'pipeline' not in o])  # SSD's fixed 160 px input stays
    cfg = load_config(SSD, opts)
    cfg.work_dir = str(tmp_path)
    runner = build_runner(cfg)
    metrics = runner.test()
    assert 0.0 <= metrics['coco/bbox_mAP'] <= 1.0
