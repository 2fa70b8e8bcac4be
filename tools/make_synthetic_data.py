"""Generate the synthetic shapes data set (COCO format); the code is
``mmkd/tools/make_synthetic_data.py`` (also ``python -m mmkd.tools.make_synthetic_data``).

    python tools/make_synthetic_data.py OUT_DIR [--num-train N] [--num-val N]
        [--image-size S | --image-size MIN MAX] [--seed S] [--max-objects N] [--force]
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from mmkd.tools.make_synthetic_data import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
