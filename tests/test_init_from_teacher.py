"""DistillDetector(init_student_from_teacher=...): student modules start as the teacher's.

The released ICD recipes, the official FGD and MGD RetinaNet recipes and MMRazor's MGD config
start the student's neck and head from the teacher's weights.
"""
import pytest
import torch
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.logging import MMLogger

from conftest import REPO, STUDENT_CFG, TEACHER_CFG
from mmkd.models.utils.init_from_teacher import copy_teacher_modules


@pytest.fixture(scope='module')
def same_arch_teacher(tmp_path_factory):
    """A checkpoint of a model with the student's architecture (different random weights)."""
    register_all_modules()
    torch.manual_seed(3)
    teacher = MODELS.build(Config.fromfile(f'{REPO}/{STUDENT_CFG}').model)
    teacher.init_weights()
    path = str(tmp_path_factory.mktemp('teacher') / 't.pth')
    torch.save(dict(state_dict=teacher.state_dict()), path)
    return teacher.state_dict(), path


def _build(ckpt, modules, student=STUDENT_CFG, teacher=STUDENT_CFG):
    torch.manual_seed(0)
    return MODELS.build(dict(type='DistillDetector', student=student, teacher=teacher,
                             teacher_ckpt=ckpt, init_student_from_teacher=modules))


def test_named_modules_are_copied_and_survive_init_weights(same_arch_teacher):
    t_state, ckpt = same_arch_teacher
    model = _build(ckpt, ['neck', 'rpn_head', 'roi_head'])
    model.init_weights()  # the runner does this after building: the copies must survive
    s = model.student.state_dict()
    for k, v in t_state.items():
        if k.startswith(('neck.', 'rpn_head.', 'roi_head.')):
            assert torch.equal(s[k], v), k
    assert not torch.equal(s['backbone.conv1.weight'], t_state['backbone.conv1.weight'])
    # the student's copies are its own tensors: training them leaves the teacher untouched
    assert (model.student.neck.fpn_convs[0].conv.weight.data_ptr()
            != model.teacher.neck.fpn_convs[0].conv.weight.data_ptr())
    # the dict form maps student names to teacher names (dotted paths)
    model = _build(ckpt, {'roi_head.bbox_head': 'roi_head.bbox_head'})
    k = 'roi_head.bbox_head.fc_cls.weight'
    assert torch.equal(model.student.state_dict()[k], t_state[k])
    assert not torch.equal(model.student.state_dict()['neck.fpn_convs.0.conv.weight'],
                           t_state['neck.fpn_convs.0.conv.weight'])


def test_the_copy_is_logged(same_arch_teacher):
    _, ckpt = same_arch_teacher
    logger = MMLogger.get_current_instance()
    seen = []
    handler = type('H', (__import__('logging').Handler, ), {
        'emit': lambda self, record: seen.append(record.getMessage())})()
    logger.addHandler(handler)
    try:
        _build(ckpt, ['neck'])
    finally:
        logger.removeHandler(handler)
    assert any('student.neck starts from the teacher' in m and 'strict' in m for m in seen)


def test_mismatches_fail_at_build_time_and_copy_nothing(same_arch_teacher):
    _, ckpt = same_arch_teacher
    # the R34w32 teacher's 128-channel neck cannot start the R18w16 student's 64-channel one
    with pytest.raises(ValueError, match=r"teacher 'neck' into student 'neck'.*differ"):
        _build(None, ['neck'], teacher=TEACHER_CFG)
    # all or nothing: a valid first pair is not copied when a later one fails
    register_all_modules()
    student = MODELS.build(Config.fromfile(f'{REPO}/{STUDENT_CFG}').model)
    teacher = MODELS.build(Config.fromfile(f'{REPO}/{STUDENT_CFG}').model)
    before = student.neck.fpn_convs[0].conv.weight.clone()
    assert not torch.equal(before, teacher.neck.fpn_convs[0].conv.weight)
    with pytest.raises(ValueError, match="teacher 'roi_head' into student 'rpn_head'"):
        copy_teacher_modules(student, teacher, {'neck': 'neck', 'rpn_head': 'roi_head'})
    assert torch.equal(student.neck.fpn_convs[0].conv.weight, before)
    with pytest.raises(ValueError, match="no module 'bbox_head'.*backbone"):
        _build(ckpt, ['bbox_head'])
    with pytest.raises(TypeError, match=r"\['neck'\]"):
        _build(ckpt, 'neck')
    with pytest.raises(ValueError, match='inside'):
        _build(ckpt, ['roi_head', 'roi_head.bbox_head'])


def test_release_configs_use_it():
    """The official FGD and MGD RetinaNet recipes start the student's neck and head from the
    teacher (methods.md, corrections); their Faster R-CNN recipes do not."""
    for name in ('fgd', 'mgd'):
        cfg = Config.fromfile(f'{REPO}/configs/kd/retinanet_r101_r50_{name}.py')
        assert list(cfg.model.init_student_from_teacher) == ['neck', 'bbox_head'], name
        cfg = Config.fromfile(f'{REPO}/configs/kd/faster_rcnn_r101_r50_{name}.py')
        assert cfg.model.get('init_student_from_teacher') is None, name
