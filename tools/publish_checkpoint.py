"""Make a release copy of a training checkpoint: weights and metadata only (no optimizer or
scheduler state), optionally in fp16, with the data set it was trained on fingerprinted.

    python tools/publish_checkpoint.py work_dirs/t/epoch_36.pth OUT.pth [--fp16]
        [--data data/synthetic] [--config CONFIG]   # verify: OUT loads strictly into CONFIG

With --data, the sha256 of the training annotation file is stored in
meta['mmkd']['train_ann_sha256']: --data is a COCO folder in a layout tools/benchmark.py reads
(<data>/annotations/instances_train.json, as the built-in data, or <data>/train/annotations.json)
or the annotation json itself. tools/benchmark.py uses a shipped checkpoint (the synthetic
teacher, the converged synthetic student of the finetune protocol) only when that fingerprint
matches the data it is about to use.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import mmkd  # noqa: E402,F401
from mmkd.utils.checkpoint import file_sha256, publish_checkpoint  # noqa: E402


def train_annotations(data: str) -> str:
    """The training annotation file of ``--data`` (a json file, or a COCO folder)."""
    if osp.isfile(data):
        return data
    from mmkd.benchmark.data import DataError, find_splits
    try:
        return find_splits(data)['train'][0]
    except DataError as exc:
        raise SystemExit(f'error: --data {data}: {exc}')


def main() -> None:
    p = argparse.ArgumentParser(description='Release copy of a training checkpoint')
    p.add_argument('checkpoint')
    p.add_argument('out')
    p.add_argument('--fp16', action='store_true', help='store floating-point weights as fp16')
    p.add_argument('--data', help='data folder the model was trained on (fingerprinted)')
    p.add_argument('--config', help='verify: the output loads strictly into this config\'s model')
    args = p.parse_args()
    extra = {}
    if args.data:
        extra['train_ann_sha256'] = file_sha256(train_annotations(args.data))
    out = publish_checkpoint(args.checkpoint, args.out, half=args.fp16, extra_meta=extra)
    print(f'written: {out} ({osp.getsize(out) / 2**20:.1f} MiB)')
    if args.config:
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules

        from mmkd.apis import load_config
        from mmkd.utils.checkpoint import load_strict
        register_all_modules()
        model = MODELS.build(load_config(args.config).model)
        load_strict(model, out, role='published')
        print(f'verified: loads strictly into {type(model).__name__} from {args.config}')


if __name__ == '__main__':
    main()
