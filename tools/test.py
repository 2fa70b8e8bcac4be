"""Evaluate a checkpoint (an mmkd checkpoint, its student twin, or a plain mmdet checkpoint).

The code is ``mmkd/tools/test.py`` (also ``python -m mmkd.tools.test`` after ``pip install``);
flags: ``python tools/test.py -h``.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from mmkd.tools.test import main  # noqa: E402

if __name__ == '__main__':
    main()
