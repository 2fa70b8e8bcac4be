"""Generate the synthetic shapes data set (COCO format); the code is
``mmkd/tools/make_synthetic_data.py`` (also ``python -m mmkd.tools.make_synthetic_data``).

    python tools/make_synthetic_data.py OUT_DIR [--num-train N] [--num-val N]
        [--image-size S | --image-size MIN MAX] [--seed S] [--max-objects N] [--force]
"""
import importlib.util
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

if __name__ == '__main__':
    # find_spec locates the mmkd package without importing it (no torch / mmdet import)
    pkg = importlib.util.find_spec('mmkd')
    if pkg is None or not pkg.submodule_search_locations:
        sys.exit('mmkd is not installed and this is not an mmkd checkout: pip install mmkd')
    path = osp.join(list(pkg.submodule_search_locations)[0], 'tools', 'make_synthetic_data.py')
    spec = importlib.util.spec_from_file_location('_mmkd_make_synthetic_data', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.exit(module.main())
