"""Convert an mmkd checkpoint into a plain mmdet checkpoint of the student.

The code is ``mmkd/tools/export_student.py`` (also ``python -m mmkd.tools.export_student``
after ``pip install``); flags: ``python tools/export_student.py -h``.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from mmkd.tools.export_student import main  # noqa: E402

if __name__ == '__main__':
    main()
