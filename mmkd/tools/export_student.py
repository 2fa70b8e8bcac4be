"""Convert an mmkd checkpoint into a plain mmdet checkpoint of the student.

    python tools/export_student.py work_dirs/x/epoch_12.pth [--out student.pth] [--ema]
        [--config CONFIG]   # also verify: the output loads strictly into the student model
    python -m mmkd.tools.export_student ...   (after pip install; or mmkd-export-student)

--out may not be the input checkpoint, and an existing training checkpoint is replaced only
with --force. The file is written atomically (temporary file + rename).

The output holds only the student's weights (plain mmdet key names) and dataset_meta: no
teacher, no adapters or prototype buffers, no optimizer state.
"""
import argparse
import os.path as osp

from mmkd.utils.tool_warnings import quiet_known_warnings  # noqa: E402

quiet_known_warnings()
from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402

import mmkd  # noqa: E402,F401
from mmkd.apis import load_config, student_model_cfg  # noqa: E402
from mmkd.utils.checkpoint import (CheckpointError, export_student_checkpoint,  # noqa: E402
                                   load_checkpoint_file, load_strict, student_path_for)


def refuse_overwriting_training_checkpoint(out: str, force: bool) -> None:
    """An existing training checkpoint at ``out`` (optimizer / message hub inside) is replaced
    only with ``--force``: a typo in --out must not destroy a run's checkpoint."""
    if force or not osp.isfile(out):
        return
    try:
        existing = load_checkpoint_file(out, 'existing --out', mmap=True)
    except CheckpointError:
        return  # not a checkpoint mmkd can read: nothing of a run's state to protect
    if 'message_hub' in existing or 'optimizer' in existing:
        raise SystemExit(f"export_student: --out '{out}' is a training checkpoint (it holds "
                         'optimizer/training state); refusing to replace it with a student-only '
                         'file. Choose another --out, or add --force to replace it.')


def main() -> None:
    p = argparse.ArgumentParser(description='Export the student of an mmkd checkpoint')
    p.add_argument('checkpoint')
    p.add_argument('--out', help='output path (default: <checkpoint>_student.pth)')
    p.add_argument('--ema', action='store_true', help='export the EMA weights')
    p.add_argument('--config', help='verify the export against this (student or mmkd) config')
    p.add_argument('--force', action='store_true',
                   help='replace an existing training checkpoint at --out (never the input)')
    args = p.parse_args()
    out = args.out or student_path_for(args.checkpoint)
    if osp.exists(out) and osp.exists(args.checkpoint) and osp.samefile(out, args.checkpoint):
        raise SystemExit(f"export_student: --out '{out}' is the input checkpoint itself; "
                         'writing it would replace the training checkpoint with a student-only '
                         'file (even with --force). Choose another --out.')
    refuse_overwriting_training_checkpoint(out, args.force)
    try:  # writes atomically (temporary file + rename)
        out = export_student_checkpoint(args.checkpoint, out, use_ema=args.ema)
    except (CheckpointError, ValueError) as exc:
        raise SystemExit(f'export_student: {exc}') from None
    print(f'student checkpoint written: {out}')
    if args.config:
        register_all_modules()
        model = MODELS.build(student_model_cfg(load_config(args.config)))
        load_strict(model, out, role='exported student')
        print(f'verified: loads strictly into {type(model).__name__} from {args.config}')


if __name__ == '__main__':
    main()
