"""Train a detector or an mmkd DistillDetector (mmdet 3.x flags).

The code is ``mmkd/tools/train.py`` (also ``python -m mmkd.tools.train`` after ``pip install``);
flags: ``python tools/train.py -h``.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from mmkd.tools.train import main  # noqa: E402

if __name__ == '__main__':
    main()
