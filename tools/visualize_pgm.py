"""Show what Global-Knowledge distillation decided: robustness per instance, imitation masks,
and the prototypes of a few classes in a 2-D projection (student vs teacher space).

    python tools/visualize_pgm.py CONFIG [CHECKPOINT] [--num-images 4] [--split val]
        [--classes 4] [--level 1] [--out-dir work_dirs/pgm_vis] [--cfg-options ...]

CHECKPOINT is an mmkd training checkpoint (prototypes, adapters and student weights are read
from it); without one, the prototypes are generated now from the config's training images with
the current student. Writes, per image, ``<id>_robustness.png`` (GT boxes coloured by r, red
= teacher and student disagree, green = they agree; then the painted mask of each FPN level)
and ``prototypes_level<l>.png``.
"""
import argparse
import os
import os.path as osp
import sys
from types import SimpleNamespace

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmkd.utils.tool_warnings import quiet_known_warnings  # noqa: E402

quiet_known_warnings()
import cv2  # noqa: E402
import matplotlib  # noqa: E402

import mmkd  # noqa: E402,F401

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmdet.registry import DATASETS, MODELS  # noqa: E402
from mmdet.structures.bbox import get_box_tensor  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402
from mmengine.config import DictAction  # noqa: E402
from mmengine.dataset import pseudo_collate  # noqa: E402

from mmkd.apis import load_config  # noqa: E402
from mmkd.models import DistillContext  # noqa: E402
from mmkd.models.methods.global_knowledge import (PGMHook, RobustDistillingModule,  # noqa: E402
                                                  offline_pipeline)
from mmkd.utils.atomic import atomic_write  # noqa: E402
from mmkd.utils.checkpoint import load_checkpoint_file  # noqa: E402


def r_color(r: float) -> tuple:
    """BGR colour for robustness r in [-1, 1]: red (disagree) -> yellow -> green (agree)."""
    x = float(np.clip((r + 1) / 2, 0, 1))
    return (0, int(255 * min(1, 2 * x)), int(255 * min(1, 2 * (1 - x))))


def mask_panel(mask: np.ndarray, size: tuple) -> np.ndarray:
    """(H, W) mask in [-1, 1] -> BGR panel of ``size`` (w, h); grey where no box painted."""
    h, w = mask.shape
    img = np.full((h, w, 3), 64, np.uint8)
    for y, x in zip(*np.nonzero(mask)):
        img[y, x] = r_color(mask[y, x])
    return cv2.resize(img, size, interpolation=cv2.INTER_NEAREST)


def pca2(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(0, keepdims=True)
    if len(x) < 2:
        return np.zeros((len(x), 2))
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    out = u[:, :2] * s[:2]
    return np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


def main() -> None:
    # the module docstring's first paragraph, whole (its first line alone stops mid-sentence)
    p = argparse.ArgumentParser(description=' '.join(__doc__.split('\n\n')[0].split()))
    p.add_argument('config', help='an mmkd Global-Knowledge config (RobustDistillingModule)')
    p.add_argument('checkpoint', nargs='?',
                   help='mmkd training checkpoint (prototypes, adapters and student weights '
                   "are read from it); without one, prototypes are generated from the config's "
                   'training images with the current student')
    p.add_argument('--num-images', type=int, default=4, help='images to draw (default: 4)')
    p.add_argument('--split', choices=['val', 'train'], default='val',
                   help='data split the images come from (default: val)')
    p.add_argument('--classes', type=int, default=4,
                   help='classes in the prototype plot (default: 4)')
    p.add_argument('--level', type=int, default=1,
                   help='FPN level of the prototype plot (default: 1)')
    p.add_argument('--out-dir', default='work_dirs/pgm_vis',
                   help='where the PNG files go (default: work_dirs/pgm_vis)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config entries, e.g. model.teacher_ckpt=PATH')
    args = p.parse_args()
    register_all_modules()
    cfg = load_config(args.config, args.cfg_options)
    model = MODELS.build(cfg.model).eval()
    losses = [l for l in model.distill_losses.values() if isinstance(l, RobustDistillingModule)]
    if not losses:
        raise SystemExit('the config has no RobustDistillingModule loss')
    loss = losses[0]
    if args.checkpoint:
        state = load_checkpoint_file(args.checkpoint, 'mmkd')['state_dict']
        model.load_state_dict(state, strict=True)
    if not loss.pgm.ready:
        print('no prototypes in the checkpoint: generating them from the training images')
        loss.generate_prototypes(*PGMHook().collect(SimpleNamespace(cfg=cfg), model, loss))
    os.makedirs(args.out_dir, exist_ok=True)

    split = cfg.val_dataloader if args.split == 'val' else cfg.train_dataloader
    ds_cfg = split.dataset.copy()
    ds_cfg['pipeline'] = offline_pipeline(cfg.val_dataloader.dataset.pipeline)
    dataset = DATASETS.build(ds_cfg)
    written = []
    with torch.no_grad():
        for i in range(min(args.num_images, len(dataset))):
            item = dataset[i]
            data = model.data_preprocessor(pseudo_collate([item]), False)
            inputs, samples = data['inputs'], data['data_samples']
            gt = samples[0].gt_instances
            boxes = get_box_tensor(gt.bboxes)
            ctx = DistillContext(model.student, model.teacher, samples,
                                 model.student.extract_feat(inputs),
                                 model.teacher.extract_feat(model._teacher_batch(inputs, samples)))
            info = loss.inspect(ctx, [boxes], gt.labels)
            img = item['inputs'].permute(1, 2, 0).numpy().copy()  # BGR uint8, resized
            h, w = img.shape[:2]
            scale = max(1, 320 // max(h, w))
            img = cv2.resize(img, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
            names = dataset.metainfo['classes']
            for b, r, c in zip(info['rois'][:, 1:].tolist(), info['r'].tolist(),
                               gt.labels.tolist()):
                x1, y1, x2, y2 = [int(v * scale) for v in b]
                cv2.rectangle(img, (x1, y1), (x2, y2), r_color(r), 2)
                cv2.putText(img, f'{names[c]} r={r:.2f}', (x1, max(10, y1 - 3)),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.35, r_color(r), 1)
            bh, bw = samples[0].batch_input_shape  # masks cover the padded batch input
            panels = [img]
            for m in info['masks']:
                hl, wl = m.shape[-2:]
                valid = m[0, :int(np.ceil(h * hl / bh)), :int(np.ceil(w * wl / bw))]
                panels.append(mask_panel(valid.cpu().numpy(), (img.shape[1], img.shape[0])))
            for j, panel in enumerate(panels[1:], 1):
                cv2.putText(panel, f'P{j + 1} mask', (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                            (255, 255, 255), 1)
            out = osp.join(args.out_dir, f'{samples[0].img_id}_robustness.png')
            ok, png = cv2.imencode('.png', np.concatenate(panels, axis=1))
            if not ok:
                raise OSError(f'cv2.imencode failed for {out}')
            with atomic_write(out, 'wb') as f:
                f.write(png.tobytes())
            written.append(out)

    lvl = args.level
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for space, ax, protos in (('student', axes[0], loss.pgm.proto_s),
                              ('teacher', axes[1], loss.pgm.proto_t)):
        classes = [c for c in range(loss.num_classes)
                   if loss.pgm.proto_valid[lvl, c].any()][:args.classes]
        pts = [protos[lvl, c][loss.pgm.proto_valid[lvl, c]].cpu().numpy() for c in classes]
        if pts:
            xy = pca2(np.concatenate(pts))
            start = 0
            for c, pc in zip(classes, pts):
                ax.scatter(xy[start:start + len(pc), 0], xy[start:start + len(pc), 1],
                           label=names[c], s=40)
                start += len(pc)
            ax.legend(fontsize=8)
        ax.set_title(f'{space} space prototypes, FPN level P{lvl + 2} (PCA)')
    fig.tight_layout()
    out = osp.join(args.out_dir, f'prototypes_level{lvl}.png')
    with atomic_write(out, 'wb') as f:
        fig.savefig(f, dpi=100, format='png')
    written.append(out)
    print('\n'.join(['written:'] + written))


if __name__ == '__main__':
    main()
