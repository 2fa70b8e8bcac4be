"""Method presets: one definition per method. Applied to the built-in pair they give exactly the
shipped synthetic configs, applied to the COCO pairs exactly the shipped COCO configs; methods
that cannot apply to a pair are skipped with a reason; bad input stops with the fix."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from conftest import REPO, TINY_RETINA
from mmkd.benchmark.compose import (PairError, base_config, build_model, check_checkpoint,
                                    check_classes, distill_config, load_model, set_num_classes,
                                    strip_pretrained)
from mmkd.benchmark.data import DataSpec
from mmkd.benchmark.plan import expand_methods
from mmkd.benchmark.presets import (METHOD_PRESETS, PairInfo, PresetContext, Skip, synthetic_tuning,
                                    widen_student)
from mmkd.benchmark.suite import METHODS, STUDENT_CONFIG, TEACHER_CONFIG
from mmkd.utils.config import load_model_cfg

SYN_TEACHER_CKPT = 'checkpoints/synthetic/faster_rcnn_r34w32_fpn_36e_synthetic.pth'
CLS_CFG = 'configs/synthetic/cls_teacher_r18w16_synthetic.py'
CLS_CKPT = 'checkpoints/synthetic/cls_teacher_r18w16_synthetic.pth'
#: entries a preset sets besides the model
RUN_KEYS = ('custom_hooks', 'optim_wrapper', 'param_scheduler', 'model_wrapper_cfg',
            'custom_imports')


def _plain(x):
    """A deep plain copy without mmengine's ``_scope_`` marks (set on entries inherited
    through ``mmdet::`` bases; mmdet is the default scope either way)."""
    x = copy.deepcopy(x.to_dict() if hasattr(x, 'to_dict') else x)
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items() if k != '_scope_'}
    if isinstance(x, list):
        return [_plain(v) for v in x]
    return x


def _normal_model(model: dict) -> dict:
    """A DistillDetector dict with student and teacher as full model dicts."""
    m = _plain(model)
    m['student'] = _plain(load_model_cfg(m['student'], 'student'))
    m['teacher'] = _plain(load_model_cfg(m['teacher'], 'teacher'))
    return m


class _Pair:
    """A teacher/student pair built once, with a preset context factory."""

    def __init__(self, student_spec, teacher_spec, base: Config, classes=None):
        self.student_model = load_model(student_spec, 'student')
        if classes:
            set_num_classes(self.student_model, classes)
        self.teacher_model = load_model(teacher_spec, 'teacher')
        self.student = build_model(self.student_model)
        self.teacher = build_model(self.teacher_model)
        self.base = base

    def ctx(self, teacher=None, protocol='scratch', tuning=None, crop=None, student_model=None):
        t = teacher if teacher is not None else self.teacher
        return PresetContext(PairInfo.from_models(self.student, t), self.student, t,
                             student_model or self.student_model, self.base, protocol,
                             tuning or {}, cls_crop_size=crop, build_student=build_model)


@pytest.fixture(scope='module')
def synthetic_pair():
    base = Config.fromfile(osp.join(REPO, STUDENT_CONFIG))
    return _Pair(STUDENT_CONFIG, TEACHER_CONFIG, base)


@pytest.fixture(scope='module')
def cls_teacher():
    cfg = Config.fromfile(osp.join(REPO, CLS_CFG))
    return _plain(cfg.model), build_model(cfg.model), int(cfg.crop_cfg.crop_size)


SHIPPED = {m: METHODS[m].config for m in METHOD_PRESETS}


@pytest.mark.parametrize('method', list(METHOD_PRESETS))
def test_preset_on_the_builtin_pair_is_the_shipped_synthetic_config(method, synthetic_pair,
                                                                    cls_teacher):
    """The benchmark's composition of each method for the built-in pair equals the shipped
    synthetic config (model, hooks, optimiser, schedule), so both come from one definition."""
    preset = METHOD_PRESETS[method]
    shipped = Config.fromfile(osp.join(REPO, SHIPPED[method]))
    for opt in METHODS[method].cfg_options:  # the PGM mode the benchmark sets
        key, value = opt.split('=')
        shipped.merge_from_dict({key: value})
    if preset.teacher == 'classifier':
        t_model, t_built, crop = cls_teacher
        plan = preset.apply(synthetic_pair.ctx(t_built, tuning=synthetic_tuning(), crop=crop))
        teacher_ckpt = CLS_CKPT
    else:
        t_model = synthetic_pair.teacher_model
        plan = preset.apply(synthetic_pair.ctx(tuning=synthetic_tuning()))
        teacher_ckpt = SYN_TEACHER_CKPT
    ours = distill_config(synthetic_pair.base, plan, synthetic_pair.student_model, t_model,
                          teacher_ckpt)
    assert _normal_model(ours.model) == _normal_model(shipped.model)
    for key in RUN_KEYS:
        assert _plain(ours.get(key)) == _plain(shipped.get(key)), key
    if method == 'dsig':  # the widened student has its own plain baseline, as shipped
        assert plan.baseline == 'student_n128'
        widened = Config.fromfile(osp.join(REPO, METHODS['student_n128'].config)).model
        assert _plain(plan.student) == _plain(widened)


def test_the_tuning_is_the_synthetic_configs_one():
    """The built-in data's tuning is defined once: the synthetic configs read it too."""
    tuning = synthetic_tuning()
    pgm = Config.fromfile(osp.join(REPO, SHIPPED['pgm']))
    assert pgm.model.distill_losses.loss_gk.pgm.min_size == tuning['pgm']['min_size'] == 12
    gid = Config.fromfile(osp.join(REPO, SHIPPED['gid']))
    assert gid.model.distill_losses.loss_gid.min_size == tuning['gid']['min_size'] == 4
    assert set(tuning) == {'pgm', 'pgm_hook', 'gid', 'icd'}


# ---- the COCO configs --------------------------------------------------------------------------
COCO_FASTER = ['faster_rcnn_r101_r50_cwd.py', 'faster_rcnn_r101_r50_pkd.py',
               'faster_rcnn_r101_r50_fgd.py', 'faster_rcnn_r101_r50_mgd.py',
               'faster_rcnn_r101_r50_gid_mmkd_two_stage.py', 'faster_rcnn_r101_r50_icd.py',
               'faster_rcnn_r101_r50_pgm.py', 'faster_rcnn_r101_r50_fpn_feat_kl_2x_coco.py',
               'faster_rcnn_r101_r50_dsig.py']
COCO_RETINA = ['retinanet_r101_r50_cwd.py', 'retinanet_r101_r50_pkd.py',
               'retinanet_r101_r50_fgd.py', 'retinanet_r101_r50_mgd.py',
               'retinanet_r101_r50_icd.py', 'retinanet_r101_r50_pgm.py']


def _first_base(config: str) -> Config:
    """The config's first ``_base_`` (its detector pair or mmdet recipe): the schedule a
    preset builds on."""
    import ast

    from mmkd.utils.paths import resolve_path
    tree = ast.parse(open(config).read())
    bases = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                 and getattr(n.targets[0], 'id', '') == '_base_')
    first = bases[0] if isinstance(bases, list) else bases
    path = first if first.startswith('mmdet::') else osp.join(osp.dirname(config), first)
    return Config.fromfile(resolve_path(path, 'config'))


def _method_of(config: str) -> str:
    name = osp.basename(config)[:-3].replace('_2x_coco', '').replace('_fpn_feat_kl', '_feat_kl')
    name = name.replace('_mmkd_two_stage', '')  # mmkd's variant of a method
    return name.split('_')[-1] if not name.endswith('feat_kl') else 'feat_kl'


@pytest.mark.parametrize('configs', [COCO_FASTER, COCO_RETINA], ids=['faster_rcnn', 'retinanet'])
def test_presets_on_the_coco_pairs_are_the_shipped_coco_configs(configs):
    """Applied to the R101 -> R50 pairs, each preset gives the COCO config's distillation
    (losses, teacher-initialised start, hooks, optimiser, schedule): the COCO configs and the
    presets share one definition. The pair is built once from the first config."""
    first = Config.fromfile(osp.join(REPO, 'configs/kd', configs[0]))
    pair = _Pair(first.model.student, first.model.teacher, first)
    for name in configs:
        cfg = Config.fromfile(osp.join(REPO, 'configs/kd', name))
        method = _method_of(name)
        student_ckpt = cfg.model.get('student_ckpt')
        protocol = 'finetune' if student_ckpt else 'scratch'
        pair.base = _first_base(osp.join(REPO, 'configs/kd', name))  # its 1x / 2x schedule
        pair.base.custom_hooks = []  # the student's own hooks (the pair file lists mmkd's)
        plan = METHOD_PRESETS[method].apply(pair.ctx(protocol=protocol))
        ours = distill_config(pair.base, plan, _plain(cfg.model.student),
                              _plain(cfg.model.teacher), cfg.model.teacher_ckpt, student_ckpt)
        expect = _plain(cfg.model)
        if method == 'pgm':  # the converged student's weights are loaded: no Pretrained init
            expect['student'] = strip_pretrained(expect['student'])
            ours.model['student'] = strip_pretrained(ours.model['student'])
        assert _plain(ours.model) == expect, name
        for key in ('optim_wrapper', 'param_scheduler', 'model_wrapper_cfg'):
            assert _plain(ours.get(key)) == _plain(cfg.get(key)), (name, key)
        if method == 'pgm':
            assert _plain(ours.custom_hooks) == _plain(cfg.custom_hooks), name


# ---- pair rules and skips ----------------------------------------------------------------------
@pytest.fixture(scope='module')
def retina_pair():
    """A tiny RetinaNet pair: 32-ch student, 64-ch teacher (P3-P7), 4 classes."""
    teacher = copy.deepcopy(TINY_RETINA)
    teacher['neck'] = dict(in_channels=[16, 32, 64, 128], out_channels=64)
    teacher['bbox_head'] = dict(TINY_RETINA['bbox_head'], in_channels=64, feat_channels=64)
    return _Pair(TINY_RETINA, teacher, Config.fromfile(osp.join(REPO, STUDENT_CONFIG)))


def test_one_stage_variants_and_adapters(retina_pair):
    p = retina_pair.ctx()
    assert not p.pair.student_two_stage and p.pair.widths_differ
    assert p.pair.student_strides == [8, 16, 32, 64, 128]
    cwd = METHOD_PRESETS['cwd'].apply(p)
    assert cwd.distill_losses['loss_cwd']['loss_weight'] == 5.0  # RetinaNet settings
    assert cwd.distill_losses['loss_cwd']['adapter'] == 'conv1x1'  # 32 -> 64 channels
    gk = METHOD_PRESETS['pgm'].apply(p).distill_losses['loss_gk']
    assert gk['boxes'] == 'auto' and gk['strides'] == [8, 16, 32, 64, 128]
    fgd = METHOD_PRESETS['fgd'].apply(p)
    assert fgd.distill_losses['loss_fgd']['alpha_fg'] == 1e-3
    assert 'init_student_from_teacher' not in fgd.model_extra  # widths differ
    assert any('differ in shape' in n for n in fgd.notes)
    dsig = METHOD_PRESETS['dsig'].apply(p)
    assert dsig.baseline == 'student_n64' and dsig.student['neck']['out_channels'] == 64
    assert dsig.student['bbox_head']['feat_channels'] == 64
    assert 'detections' in dsig.distill_losses['loss_dsig']  # one-stage nodes
    feat = METHOD_PRESETS['feat_kl'].apply(p)
    assert list(feat.distill_losses) == ['loss_kd_fpn']
    assert any('RoI KL' in n for n in feat.notes)


def test_skips_name_the_reason(retina_pair, synthetic_pair, cls_teacher):
    # a one-stage teacher with the two-stage student's levels (P2-P6, 64 channels)
    retina_p2 = copy.deepcopy(TINY_RETINA)
    retina_p2['neck'] = dict(in_channels=[16, 32, 64, 128], out_channels=64, start_level=0,
                             num_outs=5)
    retina_p2['bbox_head'] = dict(TINY_RETINA['bbox_head'], in_channels=64, feat_channels=64,
                                  anchor_generator=dict(strides=[4, 8, 16, 32, 64]))
    mixed = _Pair(STUDENT_CONFIG, retina_p2, synthetic_pair.base)
    assert METHOD_PRESETS['pkd'].apply(mixed.ctx()).distill_losses  # FPN losses apply
    with pytest.raises(Skip, match='loss_dsig .*needs a two-stage teacher with an roi_head'):
        METHOD_PRESETS['dsig'].apply(mixed.ctx())  # the loss's own check, as the reason
    with pytest.raises(Skip, match='roi_head'):
        METHOD_PRESETS['gid'].apply(mixed.ctx())
    # levels at other strides cannot be paired
    other = PresetContext(PairInfo.from_models(retina_pair.student, synthetic_pair.teacher),
                          retina_pair.student, synthetic_pair.teacher,
                          retina_pair.student_model, retina_pair.base)
    with pytest.raises(Skip, match=r'strides \[8, 16, 32, 64, 128\].*\[4, 8, 16, 32, 64\]'):
        METHOD_PRESETS['pkd'].apply(other)
    # DICOD without a classifier teacher, and with it on a sigmoid (RetinaNet) head
    with pytest.raises(Skip, match='--cls-teacher'):
        METHOD_PRESETS['dicod'].apply(retina_pair.ctx(teacher=None))
    _, cls_model, crop = cls_teacher
    with pytest.raises(Skip, match='softmax'):
        METHOD_PRESETS['dicod'].apply(retina_pair.ctx(cls_model, crop=crop))
    # a detector method with the classifier as its teacher
    with pytest.raises(Skip, match='image classifier'):
        METHOD_PRESETS['cwd'].apply(synthetic_pair.ctx(cls_model))
    # DSIG's one-stage graph on an SSD head
    ssd_cfg = Config.fromfile(osp.join(REPO, 'configs/synthetic/ssd160_r18w16_12e_synthetic.py'))
    ssd = build_model(ssd_cfg.model)
    ctx = PresetContext(PairInfo.from_models(ssd, retina_pair.teacher), ssd, retina_pair.teacher,
                        _plain(ssd_cfg.model), retina_pair.base)
    with pytest.raises(Skip, match='SSDHead|FPN'):
        METHOD_PRESETS['dsig'].apply(ctx)


def test_finetune_omits_the_teacher_initialised_start(synthetic_pair):
    same = _Pair(TEACHER_CONFIG, TEACHER_CONFIG, synthetic_pair.base)  # equal shapes
    assert METHOD_PRESETS['icd'].apply(same.ctx()).model_extra[
        'init_student_from_teacher'] == ['neck', 'rpn_head', 'roi_head']
    ft = METHOD_PRESETS['icd'].apply(same.ctx(protocol='finetune'))
    assert 'init_student_from_teacher' not in ft.model_extra
    assert any('finetune' in n for n in ft.notes)


def test_widen_student_two_stage():
    model = _plain(Config.fromfile(osp.join(REPO, STUDENT_CONFIG)).model)
    wide = widen_student(model, 128, True)
    expect = _plain(Config.fromfile(osp.join(REPO, METHODS['student_n128'].config)).model)
    assert _plain(wide) == expect and model['neck']['out_channels'] == 64


def test_expand_methods():
    assert expand_methods(['pgm', 'cwd'], auto_balance=True) == ['pgm', 'pgm+ab', 'cwd', 'cwd+ab']
    assert expand_methods(['cwd+ab']) == ['cwd+ab']
    with pytest.raises(ValueError, match='unknown method.*valid: feat_kl, pgm'):
        expand_methods(['pgm', 'bogus'])


# ---- bad input ---------------------------------------------------------------------------------
def test_bad_pairs_stop_with_the_fix(synthetic_pair, teacher_ckpt, tmp_path):
    with pytest.raises(PairError, match='predicts 8 classes but the data has 3'):
        check_classes(synthetic_pair.teacher, TEACHER_CONFIG, 'teacher', ['a', 'b', 'c'])
    # a checkpoint of the 12-epoch teacher config (same architecture) fits; the student's not
    t12 = 'configs/synthetic/faster_rcnn_r34w32_fpn_12e_synthetic.py'
    classes = list(Config.fromfile(osp.join(REPO, t12)).classes)
    check_checkpoint(build_model(load_model(t12, 'teacher')), teacher_ckpt, t12, 'teacher',
                     classes, '--teacher-ckpt')
    with pytest.raises(PairError, match=r'(?s)--teacher-ckpt .* does not fit --teacher .*'
                       'Likely cause: the model depth differs'):
        check_checkpoint(build_model(synthetic_pair.student_model), teacher_ckpt,
                         STUDENT_CONFIG, 'teacher', classes, '--teacher-ckpt')
    with pytest.raises(PairError, match='classes'):
        check_checkpoint(build_model(load_model(t12, 'teacher')), teacher_ckpt, t12, 'teacher',
                         list(reversed(classes)), '--teacher-ckpt')
    with pytest.raises(PairError, match='not an mmdet detector'):
        from mmkd.benchmark.compose import check_detector
        check_detector(torch.nn.Linear(2, 2), 'x.py', 'student')
    with pytest.raises(PairError, match='distillation config'):
        load_model(METHODS['cwd'].config, 'student')


def test_set_num_classes_and_strip_pretrained():
    model = _plain(Config.fromfile(osp.join(REPO, STUDENT_CONFIG)).model)
    assert set_num_classes(model, 3) == 8 and model['roi_head']['bbox_head']['num_classes'] == 3
    assert set_num_classes(model, 3) is None
    m = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='x')),
             neck=dict(init_cfg=dict(type='Xavier')))
    out = strip_pretrained(m)
    assert out['backbone']['init_cfg'] is None and out['neck']['init_cfg'] == {'type': 'Xavier'}


def test_base_config_defaults_for_a_model_only_student():
    data = DataSpec('x', Config(dict(train_dataloader=dict(batch_size=2), val_dataloader={},
                                     test_dataloader={}, val_evaluator={}, test_evaluator={})),
                    ['a'])
    cfg = base_config('configs/_base_/models/faster_rcnn_synthetic.py', data)
    assert cfg.optim_wrapper.optimizer.lr == 0.02 and cfg.auto_scale_lr.enable
    assert cfg.train_cfg.max_epochs == 12 and cfg.default_hooks.checkpoint.type == 'CheckpointHook'
    own = base_config(STUDENT_CONFIG, data)  # the synthetic student's own schedule
    assert own.param_scheduler[0].end == 100 and not own.get('auto_scale_lr', {}).get('enable')
