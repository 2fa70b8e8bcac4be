"""DSIG: edge matrix, node/edge losses, background mining, two-stage and RetinaNet students."""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs

from conftest import STUDENT_CFG, TEACHER_CFG, TINY_RETINA, student_roi_step
from mmkd.models.methods.dsig import (StructuredInstanceGraphLoss, edge_loss, edge_matrix,
                                      mine_hard_backgrounds, node_loss)
from mmkd.models.utils import MethodRecorder


def test_edge_matrix_is_cosine_of_flattened_nodes():
    nodes = torch.tensor([[[1.0, 0.0]], [[0.0, 2.0]], [[3.0, 3.0]]])  # (3, 1, 2)
    c = 2 ** -0.5
    want = torch.tensor([[1, 0, c], [0, 1, c], [c, c, 1]])
    torch.testing.assert_close(edge_matrix(nodes), want)


def test_edge_and_node_losses_hand_values():
    vs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    vt = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    c = 2 ** -0.5
    # A_s = I; A_t off-diagonal c: 1/2 * mean of ((0, c), (c, 0))^2 = 1/2 * 2c^2/4
    assert edge_loss(vs, vt).item() == pytest.approx(0.5 * 2 * c * c / 4)
    assert node_loss(vs, vt).item() == pytest.approx(1 / 4)  # one squared error of 1 in 4
    empty = torch.zeros(0, 2)
    assert edge_loss(empty, empty).item() == 0 and node_loss(empty, empty).item() == 0


def test_mining_picks_exactly_the_rois_over_the_threshold():
    # teacher p(bg) for each RoI: CE = -log p(bg) >= 0.6 <=> p(bg) <= exp(-0.6) = 0.5488
    p_bg = torch.tensor([0.9, 0.56, 0.548, 0.2, 0.5489])
    others = (1 - p_bg) / 2
    logits = torch.stack([others.log(), others.log(), p_bg.log()], 1)
    assert mine_hard_backgrounds(logits, 0.6).tolist() == [False, False, True, True, False]


def _build(losses, student=STUDENT_CFG, teacher=TEACHER_CFG):
    return MODELS.build(dict(type='DistillDetector', student=student, teacher=teacher,
                             teacher_ckpt=None, distill_losses=losses))


WIDE_STUDENT = dict(config=STUDENT_CFG, neck=dict(out_channels=128),
                    rpn_head=dict(in_channels=128, feat_channels=128),
                    roi_head=dict(bbox_roi_extractor=dict(out_channels=128),
                                  bbox_head=dict(in_channels=128)))


def test_two_stage_losses_with_mined_hard_backgrounds_equal_a_hand_computation():
    """Edges over the positives and only the *hard* backgrounds (teacher CE vs background >=
    the threshold), fg over the positives, bg over all backgrounds. The teacher's classifier
    is scaled so its background CE spreads, and the threshold is set between the CEs, so each
    image has backgrounds on both sides of it."""
    torch.manual_seed(0)
    model = _build(dict(loss_dsig=dict(type='StructuredInstanceGraphLoss', edge_weight=1.0,
                                       fg_weight=0.5, bg_weight=0.5)),
                   student=WIDE_STUDENT)
    fc_cls = model.teacher.roi_head.bbox_head.fc_cls
    fc_cls.weight.data.mul_(30.0)
    fc_cls.bias.data[-1] = 1.0
    packed = demo_mm_inputs(2, [[3, 96, 96], [3, 96, 96]], num_items=[3, 2], num_classes=8,
                            use_box_type=False)
    data = model.data_preprocessor(packed, True)
    sres, rois, _, out = student_roi_step(model, data['inputs'], data['data_samples'], seed=1)
    t = model.teacher.roi_head._bbox_forward(model.teacher.extract_feat(data['inputs']), rois)
    ce = -torch.log_softmax(t['cls_score'], -1)[:, -1]  # teacher CE against the background
    neg_rows = torch.cat([torch.arange(o + len(r.pos_priors), o + len(r.priors)) for r, o in
                          zip(sres, [0, len(sres[0].priors)])])
    threshold = ce[neg_rows].median().item()
    assert threshold > 0
    model.distill_losses.loss_dsig.mining_threshold = threshold
    torch.manual_seed(1)
    got = model(**data, mode='loss')
    vs, vt = out['bbox_feats'], t['bbox_feats']
    edge = fg = bg = 0.0
    off = 0
    for r in sres:
        p, n = len(r.pos_priors), len(r.priors)
        pos, neg = list(range(off, off + p)), list(range(off + p, off + n))
        off += n
        hard = [i for i in neg if ce[i] >= threshold]
        assert 0 < len(hard) < len(neg)  # some backgrounds are not hard
        nodes = pos + hard
        a_s = F.normalize(vs[nodes].flatten(1), dim=1)
        a_t = F.normalize(vt[nodes].flatten(1), dim=1)
        edge += 0.5 * ((a_t @ a_t.t() - a_s @ a_s.t()) ** 2).mean()
        fg += ((vs[pos] - vt[pos]) ** 2).mean()
        bg += 7.5 * p / len(neg) * ((vs[neg] - vt[neg]) ** 2).mean()  # all backgrounds
    scale = 2.0 / 2  # image_scale / images in the batch
    assert got['loss_dsig_edge'].item() == pytest.approx(1.0 * scale * edge.item(), rel=1e-4)
    assert got['loss_dsig_fg'].item() == pytest.approx(0.5 * scale * fg.item(), rel=1e-4)
    assert got['loss_dsig_bg'].item() == pytest.approx(0.5 * scale * bg.item(), rel=1e-4)


def test_width_mismatch_has_a_clear_error_for_one_stage():
    retina = dict(config='mmdet::retinanet/retinanet_r18_fpn_1x_coco.py',
                  backbone=dict(init_cfg=None), bbox_head=dict(num_classes=4))
    wide = copy.deepcopy(retina)
    wide['neck'] = dict(out_channels=128)
    wide['bbox_head'].update(in_channels=128, feat_channels=128)
    with pytest.raises(ValueError, match='same out_channels'):
        _build(dict(loss_dsig=dict(type='StructuredInstanceGraphLoss')), student=retina,
               teacher=wide)


def test_retinanet_student_uses_its_post_nms_detections():
    retina = TINY_RETINA
    torch.manual_seed(0)
    model = _build(dict(loss_dsig=dict(type='StructuredInstanceGraphLoss',
                                       detections=dict(max_per_img=7))),
                   student=retina, teacher=retina)
    loss = model.distill_losses.loss_dsig
    assert loss.needs == {'student_head'} and not loss.two_stage
    packed = demo_mm_inputs(2, [[3, 128, 128], [3, 128, 96]], num_items=[3, 1], num_classes=4,
                            use_box_type=False)
    data = model.data_preprocessor(packed, True)
    with MethodRecorder(loss, 'node_boxes') as det:
        out = model(**data, mode='loss')
    boxes = det.calls[0][2]
    assert len(boxes) == 2 and all(0 < len(b) <= 7 for b in boxes)
    assert {'loss_dsig_edge', 'loss_dsig_fg'} <= set(out) and 'loss_dsig_bg' not in out
    assert out['loss_dsig_fg'].item() > 0
    out['loss_dsig_fg'].backward()
    assert model.student.neck.fpn_convs[0].conv.weight.grad is not None


def _retina_node_boxes(**detections):
    torch.manual_seed(0)
    model = _build(dict(loss_dsig=dict(type='StructuredInstanceGraphLoss',
                                       detections=detections)),
                   student=TINY_RETINA, teacher=TINY_RETINA)
    packed = demo_mm_inputs(2, [[3, 128, 128], [3, 128, 96]], num_items=[3, 1], num_classes=4,
                            use_box_type=False)
    data = model.data_preprocessor(packed, True)
    loss = model.distill_losses.loss_dsig
    with MethodRecorder(loss, 'node_boxes') as det:
        model(**data, mode='loss')
    shapes = [ds.img_shape for ds in data['data_samples']]
    return det.calls[0][2], shapes


def test_retinanet_nodes_are_unclipped_by_default_and_clipped_on_request():
    # the release keeps its post-NMS detections unclipped, with no size filter; random heads
    # predict boxes close to their anchors, many of which reach past a 128 px image
    boxes, shapes = _retina_node_boxes(max_per_img=100)
    outside = [bool(((b[:, 0::2] < 0) | (b[:, 0::2] > w)).any()
                    | ((b[:, 1::2] < 0) | (b[:, 1::2] > h)).any())
               for b, (h, w) in zip(boxes, shapes)]
    assert any(outside)
    clipped, shapes = _retina_node_boxes(max_per_img=100, clip=True, min_bbox_size=0)
    for b, (h, w) in zip(clipped, shapes):
        assert len(b) and (b[:, 0::2] >= 0).all() and (b[:, 0::2] <= w).all()
        assert (b[:, 1::2] >= 0).all() and (b[:, 1::2] <= h).all()
        assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all()
    with pytest.raises(ValueError, match='clip'):
        StructuredInstanceGraphLoss(detections=dict(clipping=False))


def test_retinanet_pooling_level_rule():
    # the release pools a box of size s = sqrt(wh) from P3 below 224 px, P4 from 224 px (its
    # canonical rule: finest_scale 112 on P3-P7); mmdet's default 56 is one level coarser
    model = _build(dict(loss_dsig=dict(type='StructuredInstanceGraphLoss')),
                   student=TINY_RETINA, teacher=TINY_RETINA)
    ext = model.distill_losses.loss_dsig.roi_extractor
    rois = torch.tensor([[0, 0, 0, 150, 150], [0, 0, 0, 223, 223], [0, 0, 0, 225, 225],
                         [0, 0, 0, 500, 500], [0, 0, 0, 60, 60]], dtype=torch.float)
    assert ext.finest_scale == 112
    assert ext.map_roi_levels(rois, 5).tolist() == [0, 0, 1, 2, 0]
    mmdet = _build(dict(loss_dsig=dict(type='StructuredInstanceGraphLoss', finest_scale=56)),
                   student=TINY_RETINA, teacher=TINY_RETINA)
    assert mmdet.distill_losses.loss_dsig.roi_extractor.map_roi_levels(rois, 5).tolist() == [
        1, 1, 2, 3, 0]
    with pytest.raises(ValueError, match='not both'):
        StructuredInstanceGraphLoss(finest_scale=56, roi_extractor=dict(finest_scale=56))
    # two-stage students pool with their own RoI extractor: one-stage keys are an error
    with pytest.raises(ValueError, match="one-stage students only"):
        _build(dict(loss_dsig=dict(type='StructuredInstanceGraphLoss', finest_scale=112)),
               student=WIDE_STUDENT)


def test_box_regression_kd_hand_value():
    from mmkd.models.losses import class_deltas
    pred = torch.arange(24.0).view(2, 12)  # 3 classes x 4 deltas
    assert class_deltas(pred, torch.tensor([2, 0])).tolist() == [[8, 9, 10, 11], [12, 13, 14, 15]]
    assert torch.equal(class_deltas(pred[:, :4], torch.tensor([2, 0])), pred[:, :4])


def test_box_regression_kd_equals_hand_computation():
    torch.manual_seed(0)
    model = _build(dict(loss_kd_reg=dict(type='RoIBoxRegKDLoss', loss_weight=2.0)))
    packed = demo_mm_inputs(2, [[3, 96, 96], [3, 96, 96]], num_items=[3, 2], num_classes=8,
                            use_box_type=False)
    data = model.data_preprocessor(packed, True)
    torch.manual_seed(1)
    got = model(**data, mode='loss')['loss_kd_reg']
    sres, rois, idx, out = student_roi_step(model, data['inputs'], data['data_samples'], seed=1)
    labels = torch.cat([r.pos_gt_labels for r in sres])
    t = model.teacher.roi_head._bbox_forward(model.teacher.extract_feat(data['inputs']),
                                             rois[idx])['bbox_pred']
    s_d = out['bbox_pred'][idx].view(len(idx), -1, 4)[torch.arange(len(idx)), labels]
    t_d = t.view(len(idx), -1, 4)[torch.arange(len(idx)), labels]
    want = 2.0 * (s_d - t_d).abs().sum() / len(rois)
    assert got.item() == pytest.approx(want.item(), rel=1e-4)


def test_dense_head_kd_equals_hand_computation():
    retina = TINY_RETINA
    torch.manual_seed(0)
    model = _build(dict(loss_kd_head=dict(type='DenseHeadKDLoss', cls_weight=1.0,
                                          reg_weight=0.5)), student=retina, teacher=retina)
    packed = demo_mm_inputs(2, [[3, 128, 128], [3, 128, 96]], num_items=[3, 1], num_classes=4,
                            use_box_type=False)
    data = model.data_preprocessor(packed, True)
    got = model(**data, mode='loss')
    inputs, samples = data['inputs'], data['data_samples']
    with MethodRecorder(model.student.bbox_head, 'get_targets') as tgt:
        s_out = model.student.bbox_head(model.student.extract_feat(inputs))
        model.student.bbox_head.loss_by_feat(
            *s_out, [d.gt_instances for d in samples], [d.metainfo for d in samples])
    labels, weights = tgt.calls[0][2][0], tgt.calls[0][2][1]
    t_out = model.teacher.bbox_head(model.teacher.extract_feat(inputs))

    def flat(x, k):
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, k)

    s_c, t_c, s_b, t_b = [], [], [], []
    for lvl in range(len(labels)):
        valid = weights[lvl] > 0
        pos = valid & (labels[lvl] < 4)
        s_c.append(flat(s_out[0][lvl], 4)[valid])
        t_c.append(flat(t_out[0][lvl], 4)[valid])
        s_b.append(flat(s_out[1][lvl], 4)[pos])
        t_b.append(flat(t_out[1][lvl], 4)[pos])
    s_c, t_c = torch.cat(s_c), torch.cat(t_c)
    kl = (F.softmax(t_c, -1) * (F.log_softmax(t_c, -1) - F.log_softmax(s_c, -1))).sum()
    assert got['loss_kd_head_cls'].item() == pytest.approx(kl.item() / s_c.numel(), rel=1e-4)
    s_b, t_b = torch.cat(s_b), torch.cat(t_b)
    assert s_b.shape[0] > 0
    want = 0.5 * (s_b - t_b).abs().sum() / s_b.shape[0]
    assert got['loss_kd_head_reg'].item() == pytest.approx(want.item(), rel=1e-4)
