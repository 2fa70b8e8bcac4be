"""mmdet 2.x checkpoints load strictly into the mmdet 3.x student (mmkd/utils/mmdet2_compat.py).

The mmdet 2.x key layouts below are written from mmdet 2.x's module names, independently of the
mmdet 3.x models they are compared with: for Faster R-CNN R50-FPN and RetinaNet R50-FPN (the
students the Global-Knowledge configs start from) they must be the same keys, and a checkpoint in
mmdet 2.x's envelope must load through ``load_strict``. Early mmdet 2 FCOS keys are renamed.
"""
from typing import List

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules

from mmkd.utils.checkpoint import CheckpointMismatchError, check_compatible, load_strict
from mmkd.utils.config import load_model_cfg
from mmkd.utils.mmdet2_compat import mmdet2_key, upgrade_mmdet2_keys

BN = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')
WB = ('weight', 'bias')


def mmdet2_resnet50_keys() -> List[str]:
    """mmdet 2.x ``ResNet(depth=50)``: stem conv1/bn1, Bottleneck conv1-3/bn1-3, downsample."""
    keys = ['backbone.conv1.weight'] + [f'backbone.bn1.{k}' for k in BN]
    for stage, blocks in enumerate((3, 4, 6, 3), 1):
        for b in range(blocks):
            pre = f'backbone.layer{stage}.{b}'
            for i in (1, 2, 3):
                keys += [f'{pre}.conv{i}.weight'] + [f'{pre}.bn{i}.{k}' for k in BN]
            if b == 0:
                keys += [f'{pre}.downsample.0.weight'] + [f'{pre}.downsample.1.{k}' for k in BN]
    return keys


def mmdet2_fpn_keys(laterals: int, outs: int) -> List[str]:
    """mmdet 2.x ``FPN``: ConvModule laterals and output convs (``.conv``)."""
    return [f'neck.{name}.{i}.conv.{k}' for name, n in (('lateral_convs', laterals),
                                                        ('fpn_convs', outs))
            for i in range(n) for k in WB]


def mmdet2_faster_rcnn_keys() -> List[str]:
    """mmdet 2.x Faster R-CNN R50-FPN: RPNHead rpn_conv/rpn_cls/rpn_reg, Shared2FCBBoxHead."""
    head = ([f'rpn_head.{m}.{k}' for m in ('rpn_conv', 'rpn_cls', 'rpn_reg') for k in WB]
            + [f'roi_head.bbox_head.{m}.{k}' for m in ('shared_fcs.0', 'shared_fcs.1',
                                                        'fc_cls', 'fc_reg') for k in WB])
    return mmdet2_resnet50_keys() + mmdet2_fpn_keys(4, 4) + head


def mmdet2_retinanet_keys() -> List[str]:
    """mmdet 2.x RetinaNet R50-FPN: FPN from C3 with two extra convs, RetinaHead with 4 stacked
    cls/reg ConvModules and retina_cls/retina_reg."""
    head = ([f'bbox_head.{b}_convs.{i}.conv.{k}' for b in ('cls', 'reg') for i in range(4)
             for k in WB] + [f'bbox_head.{m}.{k}' for m in ('retina_cls', 'retina_reg')
                             for k in WB])
    return mmdet2_resnet50_keys() + mmdet2_fpn_keys(3, 5) + head


TINY_R50 = dict(depth=50, base_channels=4, init_cfg=None)  # Bottleneck outputs 16..128


def build(spec: dict):
    register_all_modules()
    return MODELS.build(load_model_cfg(spec, 'student'))


FASTER = dict(config='mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py', backbone=TINY_R50,
              neck=dict(in_channels=[16, 32, 64, 128], out_channels=8),
              rpn_head=dict(in_channels=8, feat_channels=8),
              roi_head=dict(bbox_roi_extractor=dict(out_channels=8),
                            bbox_head=dict(in_channels=8, fc_out_channels=16)))
RETINA = dict(config='mmdet::retinanet/retinanet_r50_fpn_2x_coco.py', backbone=TINY_R50,
              neck=dict(in_channels=[16, 32, 64, 128], out_channels=8),
              bbox_head=dict(in_channels=8, feat_channels=8))


def mmdet2_checkpoint(model, keys: List[str], path: str, seed: int = 0) -> dict:
    """Save a checkpoint in mmdet 2.x's envelope with the given keys (shapes from the model)."""
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    state = {k: (torch.randint(0, 100, shapes[mmdet2_key(k)], generator=g)
                 if k.endswith('num_batches_tracked')
                 else torch.randn(shapes[mmdet2_key(k)], generator=g)) for k in keys}
    meta = dict(mmdet_version='2.11.0', mmcv_version='1.3.4', epoch=24, iter=175872,
                CLASSES=('person', 'bicycle'), time='Mon May  4 21:04:34 2020',
                config="model = dict(type='FasterRCNN')")
    torch.save(dict(meta=meta, state_dict=state), path)
    return state


@pytest.mark.parametrize('spec,mmdet2_keys', [(FASTER, mmdet2_faster_rcnn_keys),
                                              (RETINA, mmdet2_retinanet_keys)],
                         ids=['faster_rcnn_r50_fpn', 'retinanet_r50_fpn'])
def test_mmdet2_layout_is_the_mmdet3_layout_and_loads_strictly(tmp_path, spec, mmdet2_keys):
    model = build(spec)
    keys = mmdet2_keys()
    assert sorted(keys) == sorted(model.state_dict())  # no key changed from mmdet 2 to 3
    path = str(tmp_path / 'mmdet2.pth')
    state = mmdet2_checkpoint(model, keys, path)
    meta = load_strict(model, path, role='student')
    assert meta['mmdet_version'] == '2.11.0'
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_early_mmdet2_fcos_predictor_names_are_renamed(tmp_path):
    model = build(dict(config='mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py',
                       backbone=dict(TINY_R50, init_cfg=None),
                       neck=dict(in_channels=[16, 32, 64, 128], out_channels=8),
                       bbox_head=dict(in_channels=8, feat_channels=8,
                                      norm_cfg=dict(type='GN', num_groups=4))))
    old = [k.replace('bbox_head.conv_', 'bbox_head.fcos_') for k in model.state_dict()]
    assert 'bbox_head.fcos_centerness.weight' in old and 'bbox_head.fcos_cls.bias' in old
    path = str(tmp_path / 'fcos_mmdet2.pth')
    state = mmdet2_checkpoint(model, old, path)
    with pytest.raises(CheckpointMismatchError, match='fcos_cls'):
        check_compatible(model, state, path, 'student')  # as stored, the keys do not fit
    load_strict(model, path, role='student')
    torch.testing.assert_close(model.bbox_head.conv_cls.weight,
                               state['bbox_head.fcos_cls.weight'])


def test_a_fitting_state_dict_is_left_alone():
    state = {'bbox_head.fcos_cls.weight': torch.zeros(1), 'a.b': torch.ones(1)}
    # the model itself uses the old name: nothing to rename
    assert upgrade_mmdet2_keys(state, ['bbox_head.fcos_cls.weight', 'a.b']) is state
    assert mmdet2_key('roi_head.bbox_head.fc_cls.weight') == 'roi_head.bbox_head.fc_cls.weight'
    assert mmdet2_key('bbox_head.fcos_reg.bias') == 'bbox_head.conv_reg.bias'
