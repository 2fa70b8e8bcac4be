"""Golden: GID's released RetinaNet recipe, selection to losses.

Fixture ``gid/retinanet_released.pt`` (``CASES.md``, "GID"): P3-P7 maps, the two heads' outputs
(one anchor per position, 4 classes), and what the release computed from them: the GI boxes and
scores, their pooling levels, the response anchor mask, the four terms and the gradient of
feat + rel. ``GeneralInstanceDistillLoss``'s defaults are the released configs (``diff_max``,
feature weight 5e-4, relation over the batch, no adapter, canonical pooling rule = finest scale
112, strict > 10 px filter); the test states them anyway. The teacher's head outputs go in
through ``DistillContext(teacher_head_outs=...)``.
"""
import pytest
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.utils import register_all_modules

from conftest import TINY_RETINA
from golden_utils import assert_same, assert_scalar, assert_tensors, load_case
from mmkd.models import DistillContext
from mmkd.models.methods.gid import GeneralInstanceDistillLoss
from mmkd.models.utils.box_pool import boxes_to_rois
from mmkd.utils.config import load_model_cfg

RELEASED = dict(score_mode='diff_max', pre_topk=3000, min_size=10, strict_min_size=True,
                nms_iou=0.3, num_instances=10, feat_weight=5e-4, relation_weight=40.0,
                cls_weight=0.1, reg_weight=1.0, relation_scope='batch', adapter=None,
                finest_scale=112)


def _retinanet(case: dict):
    """A RetinaNet with the fixture's widths and anchors (one square anchor of 4 * stride)."""
    register_all_modules()
    c = case['student_feats'][0].shape[1]
    spec = dict(TINY_RETINA, neck=dict(TINY_RETINA['neck'], out_channels=c),
                bbox_head=dict(TINY_RETINA['bbox_head'], num_classes=case['num_classes'],
                               in_channels=c, feat_channels=c,
                               anchor_generator=dict(type='AnchorGenerator',
                                                     **case['anchor_generator'])))
    return MODELS.build(load_model_cfg(spec, 'student'))


def _context(case: dict, student, teacher):
    hw = tuple(case['input_hw'])
    samples = [DetDataSample(metainfo=dict(img_shape=hw, batch_input_shape=hw))
               for _ in range(case['student_feats'][0].shape[0])]
    feats = tuple(f.clone().requires_grad_(True) for f in case['student_feats'])
    ctx = DistillContext(student, teacher, samples, feats, tuple(case['teacher_feats']),
                         student_head_outs=(case['student_cls'], case['student_reg']),
                         teacher_head_outs=(case['teacher_cls'], case['teacher_reg']))
    return feats, ctx


@pytest.fixture(scope='module')
def setup():
    case = load_case('gid/retinanet_released.pt')
    student, teacher = _retinanet(case), _retinanet(case)
    loss = MODELS.build(dict(type='GeneralInstanceDistillLoss', **RELEASED))
    loss.setup(student, teacher)
    return case, student, teacher, loss


def test_defaults_are_the_released_recipe():
    default = GeneralInstanceDistillLoss()
    released = GeneralInstanceDistillLoss(**RELEASED)
    assert (default.score_mode, default.relation_scope, default.adapter_type, default.w,
            default.sel) == (released.score_mode, released.relation_scope,
                             released.adapter_type, released.w, released.sel)
    assert default.finest_scale_cfg is None  # canonical rule: 112 on P3-P7 (checked below)


def test_anchors(setup):
    case, student, _, _ = setup
    sizes = [f.shape[-2:] for f in case['student_feats']]
    assert_tensors('anchors', student.bbox_head.prior_generator.grid_priors(sizes, device='cpu'),
                   case['anchors'])


def test_selection_levels_and_response_mask(setup):
    case, student, teacher, loss = setup
    _, ctx = _context(case, student, teacher)
    boxes, scores, aux = loss.select(ctx)
    assert_tensors('gi_boxes', boxes, case['gi_boxes'])
    assert_tensors('gi_scores', scores, case['gi_scores'])
    levels = loss.pool_s.map_roi_levels(boxes_to_rois(boxes), len(case['student_feats']))
    assert_same('gi_levels', levels, case['gi_levels_P3_is_0'])
    assert_same('response_anchor_mask', loss.response_anchor_mask(boxes, aux['priors']),
                case['response_anchor_mask'])
    # the default pooling rule is the canonical one the release uses
    default = GeneralInstanceDistillLoss()
    default.setup(student, teacher)
    assert default.pool_s.finest_scale == 112


def test_terms_and_gradient(setup):
    case, student, teacher, loss = setup
    feats, ctx = _context(case, student, teacher)
    out = loss(ctx)
    for k in ('feat', 'rel', 'cls', 'reg'):
        assert_scalar(k, out[k], case[k])
    (out['feat'] + out['rel']).backward()
    assert_tensors('grad_student_feats_feat_plus_rel', [f.grad for f in feats],
                   case['grad_student_feats_feat_plus_rel'])


def test_reg_beta_0_1(setup):
    case, student, teacher, _ = setup
    loss = GeneralInstanceDistillLoss(**dict(RELEASED, reg_beta=0.1))
    loss.setup(student, teacher)
    _, ctx = _context(case, student, teacher)
    assert_scalar('reg_beta_0.1', loss(ctx)['reg'], case['reg_beta_0.1'])


def test_mmkd_paper_reading_options_change_the_result(setup):
    """The paper-reading variant's options are not the release (CASES: other GIs for
    ``max_diff``, rel +15 % per image; feat and rel off with mmdet's finest scale 56)."""
    case, student, teacher, _ = setup
    for option, term in ((dict(score_mode='max_diff'), 'feat'),
                         (dict(relation_scope='image'), 'rel'),
                         (dict(finest_scale=56), 'feat')):
        loss = GeneralInstanceDistillLoss(**dict(RELEASED, **option))
        loss.setup(student, teacher)
        _, ctx = _context(case, student, teacher)
        value = float(loss(ctx)[term])
        assert abs(value - case[term]) > 1e-3 * abs(case[term]), option
