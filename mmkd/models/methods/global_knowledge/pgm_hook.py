"""PGMHook: the offline prototype pass of Global-Knowledge distillation, before each epoch."""
from __future__ import annotations

import copy
import time
from typing import Dict, FrozenSet, List, Optional, Tuple

import numpy as np
import torch
from mmdet.registry import DATASETS, HOOKS
from mmdet.structures.bbox import get_box_tensor
from mmengine.dataset import pseudo_collate
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch import Tensor

from ...utils.box_pool import boxes_to_rois
from .descriptors import box_descriptors
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


def pgm_population(dataset, num_classes: int, min_size: float, max_samples: int,
                   seed: int = 1) -> Dict[int, FrozenSet[int]]:
    """Which GT boxes feed PGM, as the release chooses them.

    For every class c, up to ``max_samples`` images that hold a class-c box larger than
    ``min_size`` in both sides (original-image pixels) are drawn with ``seed``; from each drawn
    image only its class-c boxes (larger than ``min_size``) are used for class c. An image drawn
    for several classes contributes the boxes of each of those classes, and no others.

    Returns:
        ``{image index: classes drawn for it}``, in index order.
    """
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
    drawn: Dict[int, set] = {}
    for c in range(num_classes):
        imgs = per_class[c]
        if len(imgs) > max_samples:
            imgs = rng.choice(imgs, size=max_samples, replace=False).tolist()
        for i in imgs:
            drawn.setdefault(int(i), set()).add(c)
    return {i: frozenset(drawn[i]) for i in sorted(drawn)}


@HOOKS.register_module()
class PGMHook(Hook):
    """Generate Global-Knowledge prototypes before every ``interval``-th epoch (offline mode).

    Runs the *live* student (in eval mode, no gradients) and the frozen teacher over the
    training images that :func:`pgm_population` draws (per class, up to ``max_samples`` images
    holding it; only that class's boxes of each), with the test pipeline, pools a descriptor per
    box at every FPN level with the loss's ``descriptor`` rule, and hands them to every
    :class:`RobustDistillingModule` whose ``pgm.mode`` is ``'offline'``. The strides are the
    batch input size over each map's size, per axis, as the release scales boxes here.
    Teacher descriptors are computed once and cached. With several processes each rank handles
    its share of the images and the prototypes end identical on every rank. Does nothing for
    online-mode losses (they refresh from their memory bank during training).

    A progress line (images and instances done, elapsed time, ETA) is logged every
    ``log_interval`` batches; the time spent is logged at the end and kept in the message hub
    as ``pgm_seconds``.

    Args:
        interval: run every ``interval`` epochs (1 = before every epoch, as the paper).
        batch_size: images per forward pass.
        seed: seed of the per-class image sampling.
        log_interval: batches between progress lines (0 = none).
    """

    priority = 'NORMAL'  # after EpochSeedHook (VERY_HIGH): the pass draws no random numbers

    def __init__(self, interval: int = 1, batch_size: int = 4, seed: int = 1,
                 log_interval: int = 50) -> None:
        self.interval, self.batch_size, self.seed = int(interval), int(batch_size), int(seed)
        self.log_interval = int(log_interval)
        if self.interval < 1 or self.batch_size < 1 or self.log_interval < 0:
            raise ValueError(f'PGMHook: interval ({interval}) and batch_size ({batch_size}) '
                             f'must be >= 1 and log_interval ({log_interval}) >= 0.')
        self._dataset = None
        self._population: Optional[Dict[int, FrozenSet[int]]] = None
        self._teacher_cache: Dict[int, List[Tensor]] = {}

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
        runner.logger.info(f'PGM: prototypes for epoch {runner.epoch} from {n} instances '
                           f'({len(self._population or {})} images in all ranks) on rank '
                           f'{get_rank()} in {seconds:.1f}s')

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
        """This rank's per-level student/teacher box descriptors and labels."""
        cfg = loss.pgm_cfg
        if self._dataset is None:
            self._dataset = self._build_dataset(runner)
            self._population = pgm_population(self._dataset, loss.num_classes,
                                              cfg['min_size'], cfg['max_samples'], self.seed)
        mine = list(self._population)[get_rank()::get_world_size()]
        L = loss.num_levels
        parts_s: List[List[Tensor]] = [[] for _ in range(L)]
        parts_t: List[List[Tensor]] = [[] for _ in range(L)]
        parts_l: List[Tensor] = []
        was_training = model.student.training
        model.student.eval()
        num_batches = -(-len(mine) // self.batch_size)
        t0, n_inst = time.perf_counter(), 0
        try:
            for b_idx, start in enumerate(range(0, len(mine), self.batch_size)):
                chunk = mine[start:start + self.batch_size]
                data = model.data_preprocessor(
                    pseudo_collate([self._dataset[i] for i in chunk]), False)
                inputs, samples = data['inputs'], data['data_samples']
                boxes, labels = [], []
                for i, ds in zip(chunk, samples):
                    b = get_box_tensor(ds.gt_instances.bboxes).float()
                    lab = ds.gt_instances.labels
                    sf = b.new_tensor(ds.scale_factor).repeat(2)  # (w, h, w, h)
                    orig = b / sf
                    drawn = torch.as_tensor(sorted(self._population[i]), dtype=lab.dtype,
                                            device=lab.device)
                    ok = ((orig[:, 2] - orig[:, 0]) > cfg['min_size']) & (
                        (orig[:, 3] - orig[:, 1]) > cfg['min_size']) & torch.isin(lab, drawn)
                    boxes.append(b[ok])
                    labels.append(lab[ok])
                rois = boxes_to_rois(boxes).to(inputs.device)
                if rois.shape[0]:
                    hw = tuple(inputs.shape[-2:])
                    s_desc = box_descriptors(model.student.extract_feat(inputs), rois, hw,
                                             loss.descriptor)
                    for l, d in enumerate(s_desc):
                        parts_s[l].append(d.cpu())
                    t_desc = self._teacher_descriptors(model, loss, chunk, inputs, samples,
                                                       rois, boxes)
                    for l in range(L):
                        parts_t[l].append(t_desc[l])
                    parts_l.append(torch.cat(labels).cpu())
                    n_inst += int(rois.shape[0])
                done = b_idx + 1
                if self.log_interval and done % self.log_interval == 0 and done < num_batches:
                    self._log_progress(runner, done, num_batches, start + len(chunk), len(mine),
                                       n_inst, time.perf_counter() - t0)
        finally:
            model.student.train(was_training)
        device = loss.pgm.proto_s.device
        cat = lambda xs, d: (torch.cat(xs) if xs else torch.zeros((0, d))).to(device)  # noqa
        desc_s = [cat(parts_s[l], loss.pgm.proto_s.shape[-1]) for l in range(L)]
        desc_t = [cat(parts_t[l], loss.pgm.proto_t.shape[-1]) for l in range(L)]
        lab = (torch.cat(parts_l) if parts_l else torch.zeros(0, dtype=torch.long)).to(device)
        return desc_s, desc_t, [lab] * L

    @staticmethod
    def _log_progress(runner, done: int, total: int, images: int, all_images: int,
                      instances: int, elapsed: float) -> None:
        eta = elapsed / done * (total - done)
        runner.logger.info(f'PGM epoch {runner.epoch}: {images}/{all_images} images, '
                           f'{instances} instances on rank {get_rank()}, {elapsed:.0f}s elapsed, '
                           f'ETA {eta:.0f}s')

    def _teacher_descriptors(self, model, loss, chunk, inputs, samples, rois,
                             boxes) -> List[Tensor]:
        """Per level, (N, Ct) teacher descriptors of this chunk's boxes, from the cache when
        every image of the chunk is in it (the teacher is frozen, so they never change)."""
        if all(i in self._teacher_cache for i in chunk):
            per_img = [self._teacher_cache[i] for i in chunk]
            return [torch.cat([p[l] for p in per_img]) for l in range(len(per_img[0]))]
        t_feats = model.teacher_features(inputs, samples)  # on the student's grid
        desc = [d.cpu() for d in box_descriptors(t_feats, rois, tuple(inputs.shape[-2:]),
                                                 loss.descriptor)]
        offsets = np.cumsum([0] + [len(b) for b in boxes])
        for j, i in enumerate(chunk):
            self._teacher_cache[i] = [d[offsets[j]:offsets[j + 1]] for d in desc]
        return desc
