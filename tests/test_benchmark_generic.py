"""The benchmark on your own data: the README's worked example ("Benchmark your own data"), run
end to end on a small COCO-format folder this test draws itself (per-split layout, category ids
that are not 1..N), with a two-stage and a one-stage pair, three methods each and one method
skipped with its reason; and the input checks that stop before any training."""
import json
import os.path as osp
import re
import shlex

import numpy as np
import pytest
import torch

from conftest import REPO, run_tool
from mmkd.benchmark.data import DataError, coco_classes, find_splits, resolve_data

CLASSES = {3: 'box', 7: 'disc', 9: 'wedge'}  # category id -> name (deliberately not 1..3)


def draw_coco_folder(root, n_train=6, n_val=3, size=96, seed=0):
    """ROOT/{train,val}/images/*.png + ROOT/{train,val}/annotations.json: 1-3 filled shapes
    (rectangles, ellipses, triangles = the three classes) on a noisy background."""
    from PIL import Image, ImageDraw
    rng = np.random.default_rng(seed)
    for split, n in (('train', n_train), ('val', n_val)):
        img_dir = osp.join(root, split, 'images')
        import os
        os.makedirs(img_dir)
        images, anns = [], []
        for i in range(n):
            noise = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            img = Image.fromarray(noise)
            draw = ImageDraw.Draw(img)
            for _ in range(int(rng.integers(1, 4))):
                cat = int(rng.choice(list(CLASSES)))
                w, h = (int(v) for v in rng.integers(18, 40, 2))
                x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
                color = tuple(int(c) for c in rng.integers(120, 256, 3))
                box = [x, y, x + w, y + h]
                if CLASSES[cat] == 'box':
                    draw.rectangle(box, fill=color)
                elif CLASSES[cat] == 'disc':
                    draw.ellipse(box, fill=color)
                else:
                    draw.polygon([(x, y + h), (x + w, y + h), (x + w // 2, y)], fill=color)
                anns.append(dict(id=len(anns) + 1, image_id=i + 1, category_id=cat,
                                 bbox=[x, y, w, h], area=w * h, iscrowd=0))
            name = f'{split}_{i:03d}.png'
            img.save(osp.join(img_dir, name))
            images.append(dict(id=i + 1, file_name=name, width=size, height=size))
        with open(osp.join(root, split, 'annotations.json'), 'w') as f:
            json.dump(dict(images=images, annotations=anns,
                           categories=[dict(id=k, name=v) for k, v in CLASSES.items()]), f)
    return root


#: the pairs of the README example, written as local configs (classes: 3)
TWO_STAGE_TEACHER = f"""_base_ = '{REPO}/configs/synthetic/faster_rcnn_r34w32_fpn_12e_synthetic.py'
model = dict(roi_head=dict(bbox_head=dict(num_classes=3)))
"""
RETINA = """_base_ = 'mmdet::retinanet/retinanet_r18_fpn_1x_coco.py'
model = dict(
    backbone=dict(init_cfg=None, base_channels=16),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels={c}),
    bbox_head=dict(num_classes=3, in_channels={c}, feat_channels={c}, stacked_convs=1))
"""


def _save_teacher(config, path, classes):
    """A checkpoint of ``config`` (random weights, fixed seed) recording ``classes``: stands
    for a trained teacher, or for the converged student of the finetune protocol."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    register_all_modules()
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(config).model)
    torch.save(dict(meta=dict(dataset_meta=dict(classes=list(classes))),
                    state_dict=model.state_dict()), path)
    return path


@pytest.fixture(scope='module')
def user_setup(tmp_path_factory):
    """The README example's files: my_data/, the teachers (configs + checkpoints), the
    one-stage student config."""
    root = tmp_path_factory.mktemp('mine')
    data = draw_coco_folder(str(root / 'my_data'))
    files = {'my_data/': data + '/'}
    for name, text in (('my_teacher.py', TWO_STAGE_TEACHER),
                       ('my_retina_teacher.py', RETINA.format(c=64)),
                       ('my_retina_student.py', RETINA.format(c=32))):
        (root / name).write_text(text)
        files[name] = str(root / name)
    names = [CLASSES[k] for k in sorted(CLASSES)]
    for name in ('my_teacher', 'my_retina_teacher', 'my_retina_student'):
        files[f'{name}.pth'] = _save_teacher(files[f'{name}.py'], str(root / f'{name}.pth'),
                                             names)
    return root, files


def readme_examples():
    """The commands of the README's worked example (after <!-- benchmark-example -->)."""
    text = open(osp.join(REPO, 'README.md')).read()
    block = text.split('<!-- benchmark-example -->', 1)[1].split('```bash', 1)[1]
    block = block.split('```', 1)[0]
    cmds = [c.replace('\\\n', ' ') for c in block.strip().split('\n\n')]
    return [shlex.split(c) for c in cmds if c.strip()]


def _tiny(cmd, files, work):
    """The README command on the test's files, at test size: 1 epoch, seed 0, 64 px."""
    out = []
    for a in cmd[1:]:  # drop 'python'
        out.append(files.get(a, a))
    i = out.index('--seeds')
    out[i + 1] = '0'
    out[out.index('--epochs') + 1] = '1'
    out[out.index('--work-dir') + 1] = str(work)
    return out + ['--img-scale', '64,64', '--batch-size', '3', '--jobs', '2', '--cfg-options',
                  'pgm:model.distill_losses.loss_gk.pgm.min_size=4']


def test_data_folder_layouts(tmp_path):
    root = draw_coco_folder(str(tmp_path / 'd'), 2, 1)
    splits = find_splits(root)
    assert splits['train'] == (osp.join(root, 'train', 'annotations.json'),
                               osp.join(root, 'train', 'images'))
    assert coco_classes(splits['train'][0]) == ['box', 'disc', 'wedge']  # by category id
    spec = resolve_data(root, str(tmp_path / 'w'), img_scale=(64, 64))
    assert spec.classes == ['box', 'disc', 'wedge'] and spec.counts == {'train': 2, 'val': 1}
    assert osp.isfile(spec.written)  # mmkd wrote the data config, a normal mmdet config
    again = resolve_data(spec.written, str(tmp_path / 'w2'))
    assert again.classes == spec.classes and again.counts == spec.counts
    assert again.cfg.train_dataloader.dataset.pipeline[2].scale == (64, 64)
    with pytest.raises(DataError, match='no train / val split found.*annotations.json'):
        resolve_data(str(tmp_path), str(tmp_path / 'w3'))
    # an empty split stops with the file and the fix
    ann = osp.join(root, 'val', 'annotations.json')
    data = json.load(open(ann))
    json.dump(dict(data, images=[], annotations=[]), open(ann, 'w'))
    with pytest.raises(DataError, match='the val split is empty: .*annotations.json lists no '
                       'images'):
        resolve_data(root, str(tmp_path / 'w4'))


def test_bad_input_stops_before_training(user_setup, tmp_path):
    """Classes that differ from the teacher's, a checkpoint that does not fit, a student that
    is not a detector, an unknown method: each stops at planning, naming the fix."""
    from mmkd.benchmark.compose import PairError
    from mmkd.benchmark.plan import BenchmarkSpec, build_plan
    root, files = user_setup
    data = resolve_data(files['my_data/'], str(tmp_path), img_scale=(64, 64))

    def plan(**kw):
        args = dict(data=data, teacher=files['my_teacher.py'], student=files['my_teacher.py'],
                    methods=['cwd'], seeds=[0], work_dir=str(tmp_path),
                    teacher_ckpt=files['my_teacher.pth'])
        args.update(kw)
        return build_plan(BenchmarkSpec(**args))

    assert plan().methods == ['cwd']
    with pytest.raises(PairError, match='predicts 8 classes but the data has 3'):
        plan(teacher='configs/synthetic/faster_rcnn_r34w32_fpn_12e_synthetic.py')
    with pytest.raises(PairError, match='(?s)--teacher-ckpt .*does not fit.*Likely cause'):
        plan(teacher_ckpt=files['my_retina_teacher.pth'])
    with pytest.raises(PairError, match='not an mmdet detector'):
        plan(student='configs/synthetic/cls_teacher_r18w16_synthetic.py')
    with pytest.raises(ValueError, match="unknown method.*'fdg'.*valid: feat_kl"):
        plan(methods=['fdg'])
    names = data.classes
    bad = dict(data.cfg.train_dataloader.dataset.metainfo, classes=tuple(reversed(names)))
    data.cfg.train_dataloader.dataset.metainfo = bad
    data.classes = list(reversed(names))
    with pytest.raises(PairError, match='trained on classes .* in another order'):
        plan()


def test_benchmark_your_own_data_end_to_end(user_setup, tmp_path):
    """The README's worked example, both pairs: every run trains and is evaluated, the method
    that cannot apply is skipped with its reason, and the report has the table, the command
    and the three charts."""
    root, files = user_setup
    two_stage, one_stage = readme_examples()
    for cmd, methods, skipped in ((two_stage, ['pkd', 'cwd', 'gid'], 'dicod'),
                                  (one_stage, ['pgm', 'cwd', 'fgd'], None)):
        work = tmp_path / cmd[cmd.index('--teacher') + 1].replace('.py', '')
        out = run_tool(_tiny(cmd, files, work), timeout=900).stdout
        assert 'estimated time' in out and 'given checkpoint; evaluate' in out
        report = (work / ('report_finetune.md' if 'finetune' in cmd else 'report.md')
                  ).read_text()
        lines = report.splitlines()
        rows = {n: next((l for l in lines if l.startswith(f'| {n}')), None) for n in methods}
        assert all(rows.values()), report
        for name in ['student'] + methods:
            metrics = list(work.glob(f'runs/{name}/seed0-*/metrics.json'))
            assert len(metrics) == 1, name
            ap = json.loads(metrics[0].read_text())['coco/bbox_mAP']
            assert 0.0 <= ap <= 1.0
        if skipped:  # the synthetic Faster R-CNN student has 8 classes: set to the data's 3
            assert 'num_classes set to 3 from the data (the config has 8)' in report
        assert 'python tools/benchmark.py --data-config' in report
        if skipped:
            assert re.search(rf'\*\*{skipped} skipped\*\*: DICOD distils from an image '
                             'classifier', report)
            assert f'SKIPPED {skipped}:' in out
        prefix = 'benchmark_finetune' if 'finetune' in cmd else 'benchmark'
        for png in ('ap', 'ap_sizes', 'loss'):
            path = work / 'images' / f'{prefix}_{png}.png'
            assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n', png
            assert f'](images/{prefix}_{png}.png)' in report
        if list(work.glob('runs/*/seed0-*/loss_balance.json')):
            assert '### Loss balance' in report
    # the one-stage pair ran the one-stage variants, every run from the converged student
    one = tmp_path / 'my_retina_teacher'
    cfg = open(next(one.glob('runs/pgm/seed0-*/benchmark_config.py'))).read()
    assert "boxes='auto'" in cfg and 'strides=[' in cfg
    assert f"student_ckpt='{files['my_retina_student.pth']}'" in cfg
    plain = open(next(one.glob('runs/student/seed0-*/benchmark_config.py'))).read()
    assert f"load_from = '{files['my_retina_student.pth']}'" in plain
    assert 'finetune protocol' in (one / 'report_finetune.md').read_text()
