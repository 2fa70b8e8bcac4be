"""Build hook of mmkd; the package metadata and dependency ranges are in pyproject.toml.

Like mmdet, a built mmkd (wheel or ``pip install .``) carries the repo's configs inside the package,
under ``mmkd/.mim/``, so that ``_base_ = 'mmkd::kd/faster_rcnn_r101_r50_pgm.py'`` and
``teacher='mmkd::synthetic/...'`` work without a checkout. The files are copied from the checkout
into the build folder at build time; nothing under ``mmkd/.mim`` is kept in git. An editable
install (``pip install -e .``) copies nothing: mmkd then reads ``configs/`` of the checkout.

``mmkd/.mim`` holds:
* ``configs/``: every config of the repo;
* ``tools/``: the user-facing command-line scripts (not the checkout's own setup/CI scripts),
  where ``mim train mmkd CONFIG`` looks for them;
* ``checkpoints/``: ``README.md`` (download list) and the small checkpoints of the built-in data
  (``checkpoints/synthetic/*.pth``) that the synthetic configs load.
"""
import glob
import os
import os.path as osp
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = osp.dirname(osp.abspath(__file__))

#: (source glob relative to the checkout, destination folder under mmkd/.mim)
MIM_FILES = [
    ('configs/**/*.py', 'configs'),
    *[(f'tools/{name}', 'tools') for name in (
        'train.py', 'test.py', 'dist_train.sh', 'dist_test.sh', 'dist_launch.sh',
        'export_student.py', 'publish_checkpoint.py', 'make_synthetic_data.py', 'benchmark.py',
        'benchmark_speed.py', 'benchmark_step.py', 'benchmark_pgm.py', 'train_cls_teacher.py',
        'visualize_pgm.py')],
    ('checkpoints/README.md', 'checkpoints'),
    ('checkpoints/synthetic/*.pth', 'checkpoints/synthetic'),
]


def mim_files(root: str = HERE):
    """``(source, destination relative to mmkd/.mim)`` of every file the package carries."""
    out = []
    for pattern, dst in MIM_FILES:
        base = pattern.split('*')[0].rstrip('/')
        base = base if osp.isdir(osp.join(root, base)) else osp.dirname(base)
        for src in sorted(glob.glob(osp.join(root, pattern), recursive=True)):
            if '__pycache__' in src or not osp.isfile(src):
                continue
            rel = osp.relpath(src, osp.join(root, base))
            out.append((src, osp.join(dst, rel) if pattern.startswith('configs') else
                        osp.join(dst, osp.basename(src))))
    return out


class BuildPyWithMim(build_py):
    """``build_py`` that also fills ``<build>/mmkd/.mim`` from the checkout (not in editable
    mode, where the checkout itself is read)."""

    def run(self):
        super().run()
        if getattr(self, 'editable_mode', False):
            return
        target = osp.join(self.build_lib, 'mmkd', '.mim')
        if osp.isdir(target):  # an earlier build's copy: rebuild it from the checkout
            shutil.rmtree(target)
        files = mim_files()
        if not any(dst.startswith('configs') for _, dst in files):
            raise RuntimeError(f'no configs found under {HERE}/configs: build mmkd from a '
                               'checkout or from its sdist, which carry configs/.')
        for src, dst in files:
            full = osp.join(target, dst)
            os.makedirs(osp.dirname(full), exist_ok=True)
            shutil.copyfile(src, full)


setup(cmdclass={'build_py': BuildPyWithMim})
