"""PGMHook: the offline prototype pass of Global-Knowledge distillation, before each epoch."""
from __future__ import annotations

import copy
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from mmdet.registry import DATASETS, HOOKS
from mmdet.structures.bbox import get_box_tensor
from mmengine.dataset import pseudo_collate
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch import Tensor

from ...utils.box_pool import boxes_to_rois, pool_levels
from .robust_distilling import RobustDistillingModule


def _innermost_dataset_cfg(cfg: dict) -> dict:
    """Unwrap RepeatDataset / ClassBalancedDataset style wrappers (``dataset=dict(...)``)."""
    while 'pipeline' not in cfg and 'dataset' in cfg:
        cfg = cfg['dataset']
    return cfg


def offline_pipeline(test_pipeline: List[dict]) -> List[dict]:
    """The test pipeline with GT boxes loaded *before* the resize, so they are rescaled."""
    steps = [copy.deepcopy(s) for s in test_pipeline
             if not str(s.get('type', '')).endswith('LoadAnnotations')]
    load = next(i for i, s in enumerate(steps) if 'LoadImage' in str(s.get('type', '')))
    steps.insert(load + 1, dict(type='LoadAnnotations', with_bbox=True))
    pack = steps[-1]
    if str(pack.get('type', '')).endswith('PackDetInputs'):
        keys = set(pack.get('meta_keys', ('img_id', 'img_shape', 'scale_factor', 'ori_shape')))
        pack['meta_keys'] = tuple(sorted(keys | {'img_id', 'img_shape', 'scale_factor'}))
    return steps


def select_images(dataset, num_classes: int, min_size: float, max_samples: int,
                  seed: int = 1) -> List[int]:
    """Indices of the images that feed PGM: per class, up to ``max_samples`` images (drawn with
    ``seed``) holding a box of that class larger than ``min_size`` in both sides
    (original-image pixels)."""
    per_class: Dict[int, List[int]] = {c: [] for c in range(num_classes)}
    for i in range(len(dataset)):
        seen = set()
        for inst in dataset.get_data_info(i).get('instances', []):
            if inst.get('ignore_flag', 0):
                continue
            x1, y1, x2, y2 = inst['bbox']
            c = int(inst['bbox_label'])
            if x2 - x1 > min_size and y2 - y1 > min_size and c not in seen and c in per_class:
                per_class[c].append(i)
                seen.add(c)
    rng = np.random.default_rng(seed)
    chosen = set()
    for c in range(num_classes):
        imgs = per_class[c]
        if len(imgs) > max_samples:
            imgs = rng.choice(imgs, size=max_samples, replace=False).tolist()
        chosen.update(imgs)
    return sorted(chosen)


@HOOKS.register_module()
class PGMHook(Hook):
    """Generate Global-Knowledge prototypes before every ``interval``-th epoch (offline mode).

    Runs the *live* student (in eval mode, no gradients) and the frozen teacher over the chosen
    training images with the test pipeline, pools a descriptor per GT box at every FPN level,
    and hands them to every :class:`RobustDistillingModule` whose ``pgm.mode`` is ``'offline'``.
    Teacher descriptors are computed once and cached. With several processes each rank handles
    its share of the images and the prototypes end identical on every rank. Does nothing for
    online-mode losses (they refresh from their memory bank during training).

    The time spent is logged and kept in the message hub as ``pgm_seconds``.

    Args:
        interval: run every ``interval`` epochs (1 = before every epoch, as the paper).
        batch_size: images per forward pass.
        seed: seed of the per-class image sampling.
    """

    priority = 'NORMAL'  # after EpochSeedHook (VERY_HIGH): the pass draws no random numbers

    def __init__(self, interval: int = 1, batch_size: int = 4, seed: int = 1) -> None:
        self.interval, self.batch_size, self.seed = int(interval), int(batch_size), int(seed)
        self._dataset = None
        self._indices: Optional[List[int]] = None
        self._teacher_cache: Dict[int, Tuple[List[Tensor], Tensor]] = {}

    @staticmethod
    def _offline_losses(model) -> List[RobustDistillingModule]:
        losses = getattr(model, 'distill_losses', {})
        return [l for l in losses.values()
                if isinstance(l, RobustDistillingModule) and l.pgm_cfg['mode'] == 'offline']

    def before_train_epoch(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        losses = self._offline_losses(model)
        if not losses or runner.epoch % self.interval:
            return
        t0 = time.perf_counter()
        desc_s, desc_t, labels = self.collect(runner, model, losses[0])
        for loss in losses:
            loss.generate_prototypes(desc_s, desc_t, labels)
        seconds = time.perf_counter() - t0
        runner.message_hub.update_info('pgm_seconds', seconds)
        n = sum(int(l.shape[0]) for l in labels[:1])
        runner.logger.info(f'PGM: prototypes for epoch {runner.epoch} from {n} instances on '
                           f'rank {get_rank()} in {seconds:.1f}s')

    def _build_dataset(self, runner):
        cfg = runner.cfg
        train = _innermost_dataset_cfg(copy.deepcopy(cfg.train_dataloader.dataset))
        test_ds = cfg.get('test_dataloader') or cfg.get('val_dataloader')
        if test_ds is None:
            raise ValueError('PGMHook needs test_dataloader (or val_dataloader) for the test '
                             'pipeline')
        train['pipeline'] = offline_pipeline(_innermost_dataset_cfg(test_ds.dataset)['pipeline'])
        train['test_mode'] = False
        return DATASETS.build(train)

    @torch.no_grad()
    def collect(self, runner, model, loss: RobustDistillingModule
                ) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        """This rank's per-level student/teacher GT-box descriptors and labels."""
        cfg = loss.pgm_cfg
        if self._dataset is None:
            self._dataset = self._build_dataset(runner)
            self._indices = select_images(self._dataset, loss.num_classes, cfg['min_size'],
                                          cfg['max_samples'], self.seed)
        mine = self._indices[get_rank()::get_world_size()]
        L = loss.num_levels
        parts_s: List[List[Tensor]] = [[] for _ in range(L)]
        parts_t: List[List[Tensor]] = [[] for _ in range(L)]
        parts_l: List[Tensor] = []
        was_training = model.student.training
        model.student.eval()
        try:
            for start in range(0, len(mine), self.batch_size):
                chunk = mine[start:start + self.batch_size]
                data = model.data_preprocessor(
                    pseudo_collate([self._dataset[i] for i in chunk]), False)
                inputs, samples = data['inputs'], data['data_samples']
                boxes, labels = [], []
                for ds in samples:
                    b = get_box_tensor(ds.gt_instances.bboxes).float()
                    sf = b.new_tensor(ds.scale_factor).repeat(2)  # (w, h, w, h)
                    orig = b / sf
                    ok = ((orig[:, 2] - orig[:, 0]) > cfg['min_size']) & (
                        (orig[:, 3] - orig[:, 1]) > cfg['min_size'])
                    boxes.append(b[ok])
                    labels.append(ds.gt_instances.labels[ok])
                rois = boxes_to_rois(boxes).to(inputs.device)
                if rois.shape[0] == 0:
                    continue
                s_desc = pool_levels(model.student.extract_feat(inputs), rois, inputs.shape[-2])
                for l, d in enumerate(s_desc):
                    parts_s[l].append(d.cpu())
                t_desc = self._teacher_descriptors(model, chunk, inputs, samples, rois, boxes)
                for l in range(L):
                    parts_t[l].append(t_desc[l])
                parts_l.append(torch.cat(labels).cpu())
        finally:
            model.student.train(was_training)
        device = loss.pgm.proto_s.device
        cat = lambda xs, d: (torch.cat(xs) if xs else torch.zeros((0, d))).to(device)  # noqa
        desc_s = [cat(parts_s[l], loss.pgm.proto_s.shape[-1]) for l in range(L)]
        desc_t = [cat(parts_t[l], loss.pgm.proto_t.shape[-1]) for l in range(L)]
        lab = (torch.cat(parts_l) if parts_l else torch.zeros(0, dtype=torch.long)).to(device)
        return desc_s, desc_t, [lab] * L

    def _teacher_descriptors(self, model, chunk, inputs, samples, rois, boxes) -> List[Tensor]:
        """Per level, (N, Ct) teacher descriptors of this chunk's boxes, from the cache when
        every image of the chunk is in it (the teacher is frozen, so they never change)."""
        if all(i in self._teacher_cache for i in chunk):
            per_img = [self._teacher_cache[i] for i in chunk]
            return [torch.cat([p[l] for p in per_img]) for l in range(len(per_img[0]))]
        t_feats = model.teacher.extract_feat(model._teacher_batch(inputs, samples))
        desc = [d.cpu() for d in pool_levels(t_feats, rois, inputs.shape[-2])]
        offsets = np.cumsum([0] + [len(b) for b in boxes])
        for j, i in enumerate(chunk):
            self._teacher_cache[i] = [d[offsets[j]:offsets[j + 1]] for d in desc]
        return desc
