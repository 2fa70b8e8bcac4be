"""The benchmark's data: an mmdet dataset config, or a COCO-format folder mmkd writes one for.

Accepted folder layouts (``train`` and ``val`` are needed, ``test`` is not used: every model is
evaluated on ``val``):

* per split: ``ROOT/train/annotations.json`` + ``ROOT/train/images/``, the same for ``val``;
* COCO's own: ``ROOT/annotations/instances_train.json`` + ``ROOT/train/`` (also ``train2017``,
  and ``val`` / ``val2017``), which is also the built-in synthetic data's layout.

Class names come from the annotation file's ``categories``, in category-id order.
"""
from __future__ import annotations

import copy
import json
import os.path as osp
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config

from ..utils.config import write_config
from ..utils.paths import resolve_path

#: Entries a data config must give (test_* default to the val ones).
DATA_KEYS = ('train_dataloader', 'val_dataloader', 'test_dataloader', 'val_evaluator',
             'test_evaluator')
SPLIT_NAMES = {'train': ('train', 'train2017'), 'val': ('val', 'val2017', 'valid', 'validation')}
LAYOUTS = ('ROOT/{train,val}/annotations.json + ROOT/{train,val}/images/',
           'ROOT/annotations/instances_{train,val}.json + ROOT/{train,val}/ (COCO, also with '
           '2017 suffixes)')


class DataError(ValueError):
    """Bad benchmark data; the message names the file and the fix."""


@dataclass
class DataSpec:
    """The data every run of a benchmark uses.

    Attributes:
        source: what the user gave (``--data-config`` file or folder).
        cfg: a Config with the five :data:`DATA_KEYS`.
        classes: the class names, in label order.
        counts: images per split (``train``, ``val``), from the annotation files.
        written: the data config file mmkd wrote for a folder, else None.
    """
    source: str
    cfg: Config
    classes: List[str]
    counts: Dict[str, int] = field(default_factory=dict)
    written: Optional[str] = None

    def ann_file(self, split: str) -> Optional[str]:
        ds = _inner_dataset(self.cfg[f'{split}_dataloader']['dataset'])
        ann = ds.get('ann_file')
        return osp.join(ds.get('data_root', '') or '', ann) if ann else None

    def describe(self) -> str:
        src = f'{self.source}' + (f' (mmkd wrote {self.written})' if self.written else '')
        n = ', '.join(f'{k} {v} images' for k, v in self.counts.items())
        return f'{src}: {len(self.classes)} classes, {n}'


def _inner_dataset(ds: dict) -> dict:
    while 'dataset' in ds and 'ann_file' not in ds:  # RepeatDataset, ClassBalancedDataset
        ds = ds['dataset']
    return ds


# ---- folders -----------------------------------------------------------------------------------
def find_splits(root: str) -> Dict[str, Tuple[str, str]]:
    """``{'train': (annotation json, image folder), 'val': (...)}`` of a COCO-format folder in
    one of the :data:`LAYOUTS`; raises :class:`DataError` naming the layouts otherwise."""
    found: Dict[str, Tuple[str, str]] = {}
    for split, names in SPLIT_NAMES.items():
        for name in names:
            per_split = (osp.join(root, name, 'annotations.json'), osp.join(root, name, 'images'))
            coco = (osp.join(root, 'annotations', f'instances_{name}.json'),
                    osp.join(root, name))
            hit = next((c for c in (per_split, coco) if osp.isfile(c[0]) and osp.isdir(c[1])),
                       None)
            if hit:
                found[split] = hit
                break
    missing = [s for s in SPLIT_NAMES if s not in found]
    if missing:
        raise DataError(f'data folder {root}: no {" / ".join(missing)} split found. Lay it out '
                        f'as {LAYOUTS[0]}, or as {LAYOUTS[1]}; or pass an mmdet dataset config '
                        'to --data-config.')
    return found


def coco_classes(ann_file: str) -> List[str]:
    """Category names of a COCO annotation file, in category-id order."""
    with open(ann_file) as f:
        cats = json.load(f).get('categories') or []
    return [str(c['name']) for c in sorted(cats, key=lambda c: c['id'])]


def _default_pipelines(img_scale: Tuple[int, int]) -> Tuple[list, list]:
    train = [dict(type='LoadImageFromFile', backend_args=None),
             dict(type='LoadAnnotations', with_bbox=True),
             dict(type='Resize', scale=img_scale, keep_ratio=True),
             dict(type='RandomFlip', prob=0.5),
             dict(type='PackDetInputs')]
    test = [dict(type='LoadImageFromFile', backend_args=None),
            dict(type='Resize', scale=img_scale, keep_ratio=True),
            dict(type='LoadAnnotations', with_bbox=True),
            dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',
                                                  'img_shape', 'scale_factor'))]
    return train, test


def set_resize_scale(pipeline: list, img_scale: Tuple[int, int]) -> list:
    """A copy of ``pipeline`` with every ``Resize`` step at ``img_scale``."""
    out = copy.deepcopy(list(pipeline))
    for step in out:
        if step.get('type') == 'Resize':
            step['scale'] = tuple(img_scale)
    return out


def folder_data_config(root: str, pipelines: Optional[Tuple[list, list]] = None,
                       img_scale: Optional[Tuple[int, int]] = None,
                       batch_size: int = 2) -> Tuple[dict, List[str]]:
    """An mmdet dataset config (as a dict) for the COCO folder ``root``, and its classes.

    ``pipelines`` (train, test) default to mmdet's standard ones at ``img_scale`` (default
    1333x800, aspect ratio kept); an ``img_scale`` also resizes given pipelines."""
    root = osp.abspath(root)
    splits = find_splits(root)
    classes = coco_classes(splits['train'][0])
    if not classes:
        raise DataError(f'{splits["train"][0]} has no categories: a COCO annotation file lists '
                        'its classes under "categories" (id, name).')
    val_classes = coco_classes(splits['val'][0])
    if val_classes and val_classes != classes:
        raise DataError(f'the train and val annotation files list different categories '
                        f'({classes} vs {val_classes}); give both the same categories.')
    if pipelines is None:
        pipelines = _default_pipelines(tuple(img_scale or (1333, 800)))
    elif img_scale:
        pipelines = (set_resize_scale(pipelines[0], img_scale),
                     set_resize_scale(pipelines[1], img_scale))
    metainfo = dict(classes=tuple(classes))

    def loader(split: str, train: bool) -> dict:
        ann, img = splits[split]
        ds = dict(type='CocoDataset', data_root='', ann_file=ann, metainfo=metainfo,
                  data_prefix=dict(img=img.rstrip('/') + '/'), backend_args=None,
                  pipeline=copy.deepcopy(pipelines[0] if train else pipelines[1]))
        if train:
            ds['filter_cfg'] = dict(filter_empty_gt=False, min_size=0)
        else:
            ds['test_mode'] = True
        return dict(batch_size=batch_size, num_workers=0, persistent_workers=False,
                    sampler=dict(type='DefaultSampler', shuffle=train),
                    **({'batch_sampler': dict(type='AspectRatioBatchSampler')} if train
                       else {'drop_last': False}),
                    dataset=ds)

    evaluator = dict(type='CocoMetric', ann_file=splits['val'][0], metric='bbox',
                     format_only=False, backend_args=None)
    cfg = dict(train_dataloader=loader('train', True), val_dataloader=loader('val', False),
               test_dataloader=loader('val', False), val_evaluator=evaluator,
               test_evaluator=copy.deepcopy(evaluator))
    return cfg, classes



# ---- checks ------------------------------------------------------------------------------------
def _count_images(ann_file: str) -> Tuple[int, List[dict], Dict[str, Any]]:
    with open(ann_file) as f:
        data = json.load(f)
    return len(data.get('images') or []), data.get('images') or [], data


def check_split(cfg: Config, split: str, classes: Sequence[str]) -> int:
    """Images of ``<split>_dataloader``'s COCO annotation file; raises :class:`DataError` for an
    empty split, a missing file or image folder, or classes the file does not have."""
    key = f'{split}_dataloader'
    ds = _inner_dataset(cfg[key]['dataset'])
    ann = ds.get('ann_file')
    if not ann:
        raise DataError(f'{key}.dataset has no ann_file: the benchmark reads COCO-format '
                        'annotation files (json).')
    path = osp.join(ds.get('data_root', '') or '', ann)
    if not osp.isfile(path):
        raise DataError(f'{key}: annotation file {path} not found; fix {key}.dataset.data_root '
                        '/ ann_file.')
    if not path.endswith('.json'):
        raise DataError(f'{key}: {path} is not a COCO json file; the benchmark needs '
                        'COCO-format annotations (convert them, e.g. with mmdet\'s '
                        'tools/dataset_converters).')
    n, images, data = _count_images(path)
    if n == 0:
        raise DataError(f'the {split} split is empty: {path} lists no images. Fix the '
                        f'annotation file or point {key}.dataset.ann_file at the right one.')
    prefix = (ds.get('data_prefix') or {}).get('img', '') or ''
    img_dir = osp.join(ds.get('data_root', '') or '', prefix)
    first = osp.join(img_dir, images[0].get('file_name', ''))
    if not osp.isfile(first):
        raise DataError(f'{key}: image {first} (the first of {path}) not found; fix '
                        f'{key}.dataset.data_prefix.img (now {prefix!r}) or data_root.')
    names = {str(c.get('name')) for c in data.get('categories') or []}
    absent = [c for c in classes if c not in names]
    if absent and len(absent) == len(classes):
        raise DataError(f'{key}: none of the classes {list(classes)} is a category of {path} '
                        f'(it has {sorted(names)}); mmdet would drop every box. Set '
                        f'{key}.dataset.metainfo=dict(classes=...) to the file\'s names.')
    if absent:
        raise DataError(f'{key}: classes {absent} are not categories of {path} (it has '
                        f'{sorted(names)}); fix metainfo.classes or the annotation file.')
    return n


def dataset_classes(cfg: Config) -> List[str]:
    """The class names the train set uses: its ``metainfo.classes``; without them mmdet's
    CocoDataset uses COCO's 80 classes, which is an error unless the file has exactly those."""
    ds = _inner_dataset(cfg.train_dataloader['dataset'])
    classes = (ds.get('metainfo') or {}).get('classes')
    if classes:
        return [str(c) for c in classes]
    from mmdet.datasets import CocoDataset
    coco = [str(c) for c in CocoDataset.METAINFO['classes']]
    ann = osp.join(ds.get('data_root', '') or '', ds.get('ann_file', ''))
    names = coco_classes(ann) if osp.isfile(ann) else []
    if names and sorted(names) != sorted(coco):
        raise DataError(f'train_dataloader.dataset has no metainfo.classes, so mmdet uses '
                        f"COCO's 80 classes, but {ann} has {names}. Add "
                        f'metainfo=dict(classes={tuple(names)}) to every dataset of the data '
                        'config.')
    return coco


def load_data_config(path: str) -> Config:
    """An mmdet dataset config with the five :data:`DATA_KEYS` (test_* default to val_*)."""
    cfg = Config.fromfile(resolve_path(path, 'data config'))
    missing = [k for k in ('train_dataloader', 'val_dataloader', 'val_evaluator') if k not in cfg]
    if missing:
        raise DataError(f'data config {path} has no {", ".join(missing)}. It must define '
                        'train_dataloader, val_dataloader and val_evaluator (a CocoMetric), as '
                        "mmdet's configs/_base_/datasets/coco_detection.py does.")
    out = Config({k: copy.deepcopy(cfg[k].to_dict() if hasattr(cfg[k], 'to_dict') else cfg[k])
                  for k in ('train_dataloader', 'val_dataloader', 'val_evaluator')})
    out.test_dataloader = copy.deepcopy(cfg.get('test_dataloader') or out.val_dataloader)
    out.test_evaluator = copy.deepcopy(cfg.get('test_evaluator') or out.val_evaluator)
    for key in ('val_evaluator', 'test_evaluator'):
        ev = out[key]
        evs = ev if isinstance(ev, list) else [ev]
        if not any(str(e.get('type', '')).endswith('CocoMetric') for e in evs):
            raise DataError(f'data config {path}: {key} is not a CocoMetric; the benchmark '
                            'reports COCO box AP. Use dict(type=\'CocoMetric\', '
                            'ann_file=VAL_JSON, metric=\'bbox\').')
    return out


def resolve_data(source: str, work_dir: str, pipelines: Optional[Tuple[list, list]] = None,
                 img_scale: Optional[Tuple[int, int]] = None,
                 batch_size: int = 2) -> DataSpec:
    """The :class:`DataSpec` of ``--data-config``: a config file, or a COCO folder for which a
    data config is written to ``<work_dir>/data_config.py``. Checks the train and val splits
    (non-empty, files present, classes known)."""
    written = None
    if osp.isdir(source):
        cfg_dict, classes = folder_data_config(source, pipelines, img_scale, batch_size)
        written = write_config(cfg_dict, osp.join(work_dir, 'data_config.py'))
        cfg = Config(cfg_dict)
    else:
        if img_scale:
            raise DataError('--img-scale applies to a data folder; with a data config, set the '
                            'Resize scale in its pipelines.')
        cfg = load_data_config(source)
        classes = dataset_classes(cfg)
    counts = {split: check_split(cfg, split, classes) for split in ('train', 'val')}
    return DataSpec(source, cfg, classes, counts, written)
