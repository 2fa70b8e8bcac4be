"""Convert an mmkd checkpoint into a plain mmdet checkpoint of the student.

    python tools/export_student.py work_dirs/x/epoch_12.pth [--out student.pth] [--ema]
        [--config CONFIG]   # also verify: the output loads strictly into the student model

The output holds only the student's weights (plain mmdet key names) and dataset_meta: no
teacher, no adapters or prototype buffers, no optimizer state.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import mmkd  # noqa: E402,F401
from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402

from mmkd.apis import load_config, student_model_cfg  # noqa: E402
from mmkd.utils.checkpoint import export_student_checkpoint, load_strict  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description='Export the student of an mmkd checkpoint')
    p.add_argument('checkpoint')
    p.add_argument('--out', help='output path (default: <checkpoint>_student.pth)')
    p.add_argument('--ema', action='store_true', help='export the EMA weights')
    p.add_argument('--config', help='verify the export against this (student or mmkd) config')
    args = p.parse_args()
    out = export_student_checkpoint(args.checkpoint, args.out, use_ema=args.ema)
    print(f'student checkpoint written: {out}')
    if args.config:
        register_all_modules()
        model = MODELS.build(student_model_cfg(load_config(args.config)))
        load_strict(model, out, role='exported student')
        print(f'verified: loads strictly into {type(model).__name__} from {args.config}')


if __name__ == '__main__':
    main()
