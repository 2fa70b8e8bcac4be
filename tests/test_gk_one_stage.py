"""Global Knowledge on a one-stage (RetinaNet) student: positive anchors and soft labels."""
import pytest
import torch
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmengine.logging import MessageHub

from conftest import TINY_RETINA as RETINA  # noqa: E402
from mmkd.models import soft_label_kl
from mmkd.models.utils import MethodRecorder


def test_retinanet_student_positive_anchor_soft_label_matches_hand_computation():
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='DistillDetector', student=RETINA, teacher=RETINA, teacher_ckpt=None,
        distill_losses=dict(loss_gk=dict(type='RobustDistillingModule', feat_schedule={},
                                         pgm=dict(mode='online')))))
    loss = model.distill_losses.loss_gk
    assert loss.boxes == 'pos_anchors' and loss.level_reduction == 'sum'
    assert loss.needs == {'student_dense_targets', 'teacher_head'}
    packed = demo_mm_inputs(2, [[3, 128, 128], [3, 128, 96]], num_items=[3, 2], num_classes=4,
                            use_box_type=False)
    data = model.data_preprocessor(packed, True)
    MessageHub.get_current_instance().update_info('epoch', 0)
    torch.manual_seed(1)
    out = model(**data, mode='loss')
    assert out['loss_gk_fg'].item() > 0 and out['loss_gk_soft'].item() > 0

    # by hand: positive anchors from the student's own targets, r = 1 (no prototypes yet)
    inputs, samples = data['inputs'], data['data_samples']
    torch.manual_seed(1)
    with MethodRecorder(model.student.bbox_head, 'get_targets') as tgt:
        s_out = model.student.bbox_head(model.student.extract_feat(inputs))
        model.student.bbox_head.loss_by_feat(
            *s_out, [d.gt_instances for d in samples], [d.metainfo for d in samples])
    labels = tgt.calls[0][2][0]
    t_cls = model.teacher.bbox_head(model.teacher.extract_feat(inputs))[0]
    s_rows, t_rows = [], []
    for i in range(2):
        for lvl in range(len(labels)):
            pos = (labels[lvl][i] >= 0) & (labels[lvl][i] < 4)
            flat = lambda x: x.permute(0, 2, 3, 1).reshape(2, -1, 4)[i][pos]  # noqa: E731
            s_rows.append(flat(s_out[0][lvl]))
            t_rows.append(flat(t_cls[lvl]))
    s_logits, t_logits = torch.cat(s_rows), torch.cat(t_rows)
    assert s_logits.shape[0] > 0
    want = soft_label_kl(s_logits, t_logits, 2.0, 'classmean')
    assert out['loss_gk_soft'].item() == pytest.approx(want.item(), rel=1e-4)


def test_wrong_box_source_for_the_student_type_is_rejected():
    with pytest.raises(ValueError, match="use 'auto'"):
        MODELS.build(dict(type='DistillDetector', student=RETINA, teacher=RETINA,
                          distill_losses=dict(loss_gk=dict(type='RobustDistillingModule',
                                                           boxes='pos_rois'))))
