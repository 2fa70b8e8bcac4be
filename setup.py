"""Installable package for mmkd: knowledge distillation for MMDetection 3.x."""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "mmkd" / "version.py").read_text()).group(1)

setup(
    name="mmkd",
    version=VERSION,
    description="Knowledge distillation for object detectors on MMDetection 3.x",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["mmkd", "mmkd.*"]),
    python_requires=">=3.9",
    install_requires=[
        "torch==2.13.0",
        "mmengine==0.10.7",
        "mmcv==2.1.0",
        "mmdet==3.3.0",
        "pycocotools",
        "numpy",
        "kornia",
    ],
    include_package_data=True,
    zip_safe=False,
)
