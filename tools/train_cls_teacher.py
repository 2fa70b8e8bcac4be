"""Train DICOD's classifier teacher on object crops of a COCO-format detection data set.

    python tools/train_cls_teacher.py CONFIG [--work-dir DIR] [--epochs N] [--cfg-options ...]

CONFIG holds ``model`` (a ``CropClassifier``), the detection data set's ``train_dataloader`` /
``val_dataloader`` (only their ``data_root``, ``ann_file``, ``data_prefix.img`` and
``metainfo.classes`` are used), ``crop_cfg`` and ``cls_train_cfg``; see
``configs/synthetic/cls_teacher_r18w16_synthetic.py``. Every annotated object (not crowd, at
least ``crop_cfg.min_size`` px) is cut out with the same differentiable crop-and-resize DICOD
uses at distillation time, at ``crop_cfg.crop_size``, after normalising the image with the
model's ``data_preprocessor`` (so the classifier learns exactly the input convention a
DistillDetector will feed it). Training crops get random box jitter and horizontal flips.

Top-1 accuracy on the val split's crops is logged after every epoch. The work dir receives
``cls_teacher.pth`` (``{'state_dict', 'meta'}``, loadable strictly as a DICOD ``teacher_ckpt``)
and ``metrics.json``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import os.path as osp
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402

from mmkd.models.methods.dicod import CropClassifier, build_crop_classifier  # noqa: E402
from mmkd.models.methods.dicod.crop import crop_and_resize  # noqa: E402
from mmkd.utils.atomic import atomic_write  # noqa: E402
from mmkd.utils.checkpoint import save_atomic  # noqa: E402
from mmkd.utils.paths import resolve_path  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Train a DICOD classifier teacher on object crops')
    p.add_argument('config', help='classifier config (local, or relative to the mmkd checkout)')
    p.add_argument('--work-dir', help='output folder (default ./work_dirs/<config name>)')
    p.add_argument('--epochs', type=int, help='override cls_train_cfg.epochs')
    p.add_argument('--out', default='cls_teacher.pth', help='checkpoint file name in the work dir')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config entries, e.g. crop_cfg.crop_size=48')
    return p.parse_args(argv)


# ---- data ------------------------------------------------------------------------------------
def split_files(cfg: Config, split: str) -> Tuple[str, str]:
    """(annotation json, image folder) of ``<split>_dataloader.dataset`` (RepeatDataset-aware)."""
    key = f'{split}_dataloader'
    if key not in cfg:
        raise KeyError(f'the config has no {key}: inherit a detection data set config (e.g. '
                       "_base_ = '../_base_/datasets/synthetic_detection.py')")
    ds = cfg[key]['dataset']
    while 'ann_file' not in ds and 'dataset' in ds:  # RepeatDataset / ClassBalancedDataset
        ds = ds['dataset']
    root = ds.get('data_root', '') or ''
    ann = osp.join(root, ds['ann_file'])
    img = osp.join(root, (ds.get('data_prefix') or {}).get('img', ''))
    for path, what in ((ann, 'annotation file'), (img, 'image folder')):
        if not osp.exists(path):
            raise FileNotFoundError(f'{split} {what} {path} not found; generate the synthetic '
                                    'data with tools/make_synthetic_data.py data/synthetic, or '
                                    f'point {key}.dataset.data_root at your data')
    return ann, img


def load_objects(ann_file: str, img_dir: str, classes: Sequence[str],
                 min_size: float) -> List[Tuple[str, np.ndarray, np.ndarray]]:
    """Per image with objects: (path, (n, 4) xyxy boxes, (n,) labels). Classes by name."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(ann_file)
    name_to_label = {n: i for i, n in enumerate(classes)}
    cat_to_label = {c['id']: name_to_label[c['name']] for c in coco.loadCats(coco.getCatIds())
                    if c['name'] in name_to_label}
    if not cat_to_label:
        raise ValueError(f'none of the categories of {ann_file} is among the config\'s classes '
                         f'{tuple(classes)}; set metainfo.classes to your data set\'s names')
    out = []
    for img_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(img_id)[0]
        boxes, labels = [], []
        for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id)):
            x, y, w, h = a['bbox']
            if a.get('iscrowd', 0) or a['category_id'] not in cat_to_label:
                continue
            if w < min_size or h < min_size:
                continue
            boxes.append([x, y, x + w, y + h])
            labels.append(cat_to_label[a['category_id']])
        if boxes:
            out.append((osp.join(img_dir, info['file_name']), np.asarray(boxes, np.float32),
                        np.asarray(labels, np.int64)))
    if not out:
        raise ValueError(f'{ann_file} has no usable objects (min_size={min_size})')
    return out


class CropDataset(torch.utils.data.Dataset):
    """One item per image: ((n, 3, S, S) normalised crops of its objects, (n,) labels)."""

    def __init__(self, objects: list, model: CropClassifier, crop_size: int, jitter: float,
                 flip: bool, image_scale: Optional[int], seed: int, cache: bool) -> None:
        self.objects, self.crop_size = objects, int(crop_size)
        self.jitter, self.flip, self.image_scale = float(jitter), bool(flip), image_scale
        self.normalise = model.normalise
        self.seed, self.epoch = int(seed), 0
        self.cache: Optional[Dict[int, np.ndarray]] = {} if cache else None

    def __len__(self) -> int:
        return len(self.objects)

    def _image(self, i: int) -> Tuple[np.ndarray, float]:
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        img = cv2.imread(self.objects[i][0], cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(f'cannot read image {self.objects[i][0]}')
        scale = 1.0
        if self.image_scale and max(img.shape[:2]) > self.image_scale:
            scale = self.image_scale / max(img.shape[:2])
            img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        if self.cache is not None:
            self.cache[i] = (img, scale)
        return img, scale

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, torch.Tensor]:
        img, scale = self._image(i)
        _, boxes, labels = self.objects[i]
        boxes = torch.from_numpy(boxes) * scale
        h, w = img.shape[:2]
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 7919 + i)
        if self.jitter > 0:
            wh = boxes[:, 2:] - boxes[:, :2]
            ctr = (boxes[:, 2:] + boxes[:, :2]) / 2
            ctr = ctr + wh * self.jitter * (torch.rand(wh.shape, generator=gen) * 2 - 1)
            wh = wh * torch.exp(self.jitter * (torch.rand(wh.shape, generator=gen) * 2 - 1))
            boxes = torch.cat([ctr - wh / 2, ctr + wh / 2], 1)
        with torch.no_grad():
            x = self.normalise(torch.from_numpy(img).permute(2, 0, 1)[None])
            crops = crop_and_resize(x, boxes, self.crop_size, img_shapes=[(h, w)])
            if self.flip:
                m = torch.rand(len(crops), generator=gen) < 0.5
                crops = torch.where(m[:, None, None, None], crops.flip(-1), crops)
        return crops, torch.from_numpy(labels)


def concat_items(items: list) -> Tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([c for c, _ in items]), torch.cat([lab for _, lab in items])


def batches(loader, batch_size: int, gen: torch.Generator):
    """Regroup per-image crops into shuffled batches through a buffer of ~8 batches."""
    xs, ys, n = [], [], 0
    for x, y in loader:
        xs.append(x)
        ys.append(y)
        n += len(y)
        if n >= 8 * batch_size:
            X, Y = torch.cat(xs), torch.cat(ys)
            perm = torch.randperm(len(Y), generator=gen)
            X, Y = X[perm], Y[perm]
            k = (len(Y) // batch_size) * batch_size
            for s in range(0, k, batch_size):
                yield X[s:s + batch_size], Y[s:s + batch_size]
            xs, ys, n = [X[k:]], [Y[k:]], len(Y) - k
    if n:
        X, Y = torch.cat(xs), torch.cat(ys)
        perm = torch.randperm(len(Y), generator=gen)
        for s in range(0, len(Y), batch_size):
            idx = perm[s:s + batch_size]
            if len(idx) > 1:  # BatchNorm needs 2+ samples
                yield X[idx], Y[idx]


@torch.no_grad()
def evaluate(model: CropClassifier, loader) -> Tuple[float, int]:
    """(top-1 accuracy, number of crops) on ``loader``."""
    model.eval()
    correct = total = 0
    for x, y in loader:
        for s in range(0, len(y), 256):
            pred = model(x[s:s + 256]).argmax(-1)
            correct += int((pred == y[s:s + 256]).sum())
            total += len(y[s:s + 256])
    return correct / max(total, 1), total


# ---- main ------------------------------------------------------------------------------------
def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    args = parse_args(argv)
    cfg = Config.fromfile(resolve_path(args.config, 'classifier config'))
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if 'crop_cfg' not in cfg or 'cls_train_cfg' not in cfg:
        raise KeyError('the config needs crop_cfg and cls_train_cfg; see '
                       'configs/synthetic/cls_teacher_r18w16_synthetic.py')
    crop, tr = dict(cfg.crop_cfg), dict(cfg.cls_train_cfg)
    if args.epochs is not None:
        tr['epochs'] = args.epochs
    work_dir = args.work_dir or osp.join('./work_dirs',
                                         osp.splitext(osp.basename(args.config))[0])
    os.makedirs(work_dir, exist_ok=True)
    logger = MMLogger.get_instance('train_cls_teacher', log_file=osp.join(work_dir, 'train.log'))
    if tr.get('num_threads'):
        torch.set_num_threads(int(tr['num_threads']))
    seed = int(tr.get('seed', 0))
    torch.manual_seed(seed)

    from mmdet.utils import register_all_modules
    register_all_modules()
    model = build_crop_classifier(cfg.model)
    model.init_weights()
    classes = list(cfg.get('classes') or cfg.train_dataloader.dataset.metainfo['classes'])
    if len(classes) != model.num_classes:
        raise ValueError(f'the config lists {len(classes)} classes but model.num_classes is '
                         f'{model.num_classes}; make them equal')

    min_size = float(crop.get('min_size', 2.0))
    train_objs = load_objects(*split_files(cfg, 'train'), classes, min_size)
    val_objs = load_objects(*split_files(cfg, 'val'), classes, min_size)
    cache = len(train_objs) + len(val_objs) <= int(crop.get('cache_max_images', 5000))
    size = int(crop['crop_size'])
    train_ds = CropDataset(train_objs, model, size, crop.get('jitter', 0.1), crop.get('flip', True),
                           crop.get('image_scale'), seed, cache)
    val_ds = CropDataset(val_objs, model, size, 0.0, False, crop.get('image_scale'), seed, cache)
    workers = int(tr.get('num_workers', 0))
    mk = dict(collate_fn=concat_items, num_workers=workers, persistent_workers=False)
    n_train = sum(len(o[2]) for o in train_objs)
    logger.info(f'{n_train} training crops from {len(train_objs)} images, '
                f'{sum(len(o[2]) for o in val_objs)} val crops; crop size {size}; '
                f'classes {classes}')

    epochs, bs = int(tr.get('epochs', 12)), int(tr.get('batch_size', 64))
    params = [p for p in model.parameters() if p.requires_grad]
    lr, wd = float(tr.get('lr', 2e-3)), float(tr.get('weight_decay', 0.05))
    if tr.get('optimizer', 'AdamW') == 'SGD':
        optim = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd, nesterov=True)
    else:
        optim = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    total_iters = max(1, epochs * math.ceil(n_train / bs))
    warmup = min(int(tr.get('warmup_iters', 50)), total_iters // 5)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda it: min(1.0, (it + 1) / max(warmup, 1))
                                              * 0.5 * (1 + math.cos(math.pi * it / total_iters)))
    smoothing = float(tr.get('label_smoothing', 0.0))
    gen = torch.Generator().manual_seed(seed)
    history, best = [], 0.0
    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        train_ds.epoch = epoch
        order = torch.utils.data.DataLoader(train_ds, batch_size=4, shuffle=True,
                                            generator=torch.Generator().manual_seed(seed + epoch),
                                            **mk)
        loss_sum, n_seen = 0.0, 0
        for x, y in batches(order, bs, gen):
            loss = F.cross_entropy(model(x), y, label_smoothing=smoothing)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            sched.step()
            loss_sum += float(loss) * len(y)
            n_seen += len(y)
        val_loader = torch.utils.data.DataLoader(val_ds, batch_size=8, shuffle=False, **mk)
        top1, n_val = evaluate(model, val_loader)
        best = max(best, top1)
        history.append(dict(epoch=epoch + 1, loss=loss_sum / max(n_seen, 1), top1=top1))
        logger.info(f'epoch {epoch + 1}/{epochs}: loss {loss_sum / max(n_seen, 1):.4f}, val '
                    f'top-1 {100 * top1:.2f}% ({n_val} crops), {time.time() - t0:.1f}s')

    model.eval()
    meta = dict(dataset_meta=dict(classes=classes), crop_size=size, epochs=epochs,
                val_top1=float(history[-1]['top1']) if history else 0.0, best_val_top1=best,
                input_convention={
                    k: (list(v) if isinstance(v, (list, tuple)) else v)
                    for k, v in dict(cfg.model.get('data_preprocessor') or {}).items()},
                config=osp.basename(args.config), mmkd_tool='train_cls_teacher')
    ckpt = osp.join(work_dir, args.out)
    save_atomic(dict(state_dict=model.state_dict(), meta=meta), ckpt)
    result = dict(top1=meta['val_top1'], best_top1=best, epochs=epochs, train_crops=n_train,
                  seconds=round(time.time() - t0, 1), checkpoint=ckpt, history=history)
    with atomic_write(osp.join(work_dir, 'metrics.json')) as f:
        json.dump(result, f, indent=1)
    logger.info(f'saved {ckpt}; final val top-1 {100 * result["top1"]:.2f}% '
                f'(best {100 * best:.2f}%)')
    print(json.dumps({k: v for k, v in result.items() if k != 'history'}))
    return result


if __name__ == '__main__':
    main()
