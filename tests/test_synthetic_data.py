"""Tests of the synthetic COCO data generator (mmkd.datasets.synthetic)."""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mmkd.datasets.synthetic import SYNTHETIC_CLASSES, generate_synthetic_coco

# pycocotools' decode (used by COCO.annToMask) warns about numpy 2's copy keyword
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword")

# small but large enough to contain every class, empty images and occlusions
PARAMS = dict(num_train=40, num_val=10, image_size=96, seed=3, max_objects=8)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("synth")
    return generate_synthetic_coco(str(out), **PARAMS)


def _load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _all_files(paths: dict) -> list[Path]:
    root = Path(paths["data_root"])
    return sorted(p for p in root.rglob("*") if p.is_file())


def _iou(a: list[float], b: list[float]) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_returned_paths_and_layout(dataset: dict) -> None:
    assert set(dataset) == {"data_root", "train_ann", "val_ann", "train_img_dir", "val_img_dir"}
    for value in dataset.values():
        assert os.path.isabs(value) and os.path.exists(value)
    root = Path(dataset["data_root"])
    assert (root / "manifest.json").is_file()
    assert sorted(p.name for p in (root / "train").iterdir()) == [f"{i:06d}.png" for i in range(40)]
    assert sorted(p.name for p in (root / "val").iterdir()) == [f"{i:06d}.png" for i in range(10)]
    manifest = _load(str(root / "manifest.json"))
    assert manifest["params"] == {"num_train": 40, "num_val": 10, "image_size": 96, "seed": 3,
                                  "max_objects": 8}
    assert "version" in manifest


def test_determinism(tmp_path: Path, dataset: dict) -> None:
    other = generate_synthetic_coco(str(tmp_path / "again"), **PARAMS)
    for key in ("train_ann", "val_ann"):
        assert Path(dataset[key]).read_bytes() == Path(other[key]).read_bytes()
    for key in ("train_img_dir", "val_img_dir"):
        names = sorted(os.listdir(dataset[key]))
        assert names == sorted(os.listdir(other[key]))
        for name in names:
            a = cv2.imread(os.path.join(dataset[key], name), cv2.IMREAD_UNCHANGED)
            b = cv2.imread(os.path.join(other[key], name), cv2.IMREAD_UNCHANGED)
            assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
            np.testing.assert_array_equal(a, b)


def test_different_seed_differs(tmp_path: Path) -> None:
    a = generate_synthetic_coco(str(tmp_path / "a"), num_train=2, num_val=0, image_size=64, seed=0)
    b = generate_synthetic_coco(str(tmp_path / "b"), num_train=2, num_val=0, image_size=64, seed=1)
    img_a = cv2.imread(os.path.join(a["train_img_dir"], "000000.png"))
    img_b = cv2.imread(os.path.join(b["train_img_dir"], "000000.png"))
    assert not np.array_equal(img_a, img_b)


def test_idempotent_and_force(tmp_path: Path) -> None:
    kwargs = dict(num_train=4, num_val=2, image_size=64, seed=5)
    paths = generate_synthetic_coco(str(tmp_path / "d"), **kwargs)
    files = _all_files(paths)
    # push the mtimes into the past so that any rewrite is detectable
    for f in files:
        os.utime(f, ns=(1_000_000_000, 1_000_000_000))
    again = generate_synthetic_coco(str(tmp_path / "d"), **kwargs)
    assert again == paths
    assert _all_files(again) == files
    assert all(f.stat().st_mtime_ns == 1_000_000_000 for f in files)
    # changed parameters or force=True regenerate
    generate_synthetic_coco(str(tmp_path / "d"), force=True, **kwargs)
    assert all(f.stat().st_mtime_ns != 1_000_000_000 for f in files)
    changed = generate_synthetic_coco(str(tmp_path / "d"), num_train=3, num_val=2, image_size=64,
                                      seed=5)
    assert len(os.listdir(changed["train_img_dir"])) == 3
    assert len(_load(changed["train_ann"])["images"]) == 3
    # a missing image triggers regeneration
    os.remove(os.path.join(changed["val_img_dir"], "000001.png"))
    generate_synthetic_coco(str(tmp_path / "d"), num_train=3, num_val=2, image_size=64, seed=5)
    assert os.path.isfile(os.path.join(changed["val_img_dir"], "000001.png"))


@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_validity(dataset: dict, split: str) -> None:
    ann_file = dataset[f"{split}_ann"]
    coco = COCO(ann_file)
    cat_ids = sorted(coco.getCatIds())
    assert cat_ids == list(range(1, len(SYNTHETIC_CLASSES) + 1))
    assert [coco.cats[i]["name"] for i in cat_ids] == list(SYNTHETIC_CLASSES)
    img_dir = dataset[f"{split}_img_dir"]
    ann_ids = [a["id"] for a in coco.dataset["annotations"]]
    assert len(set(ann_ids)) == len(ann_ids) and min(ann_ids) >= 1
    for img_id, info in coco.imgs.items():
        img = cv2.imread(os.path.join(img_dir, info["file_name"]))
        assert img is not None
        assert img.shape == (info["height"], info["width"], 3)
        for ann in coco.imgToAnns[img_id]:
            x, y, w, h = ann["bbox"]
            assert all(isinstance(v, float) for v in ann["bbox"])
            assert w >= 2 and h >= 2
            assert x >= 0 and y >= 0 and x + w <= info["width"] and y + h <= info["height"]
            assert ann["category_id"] in cat_ids
            assert ann["iscrowd"] == 0
            m = coco.annToMask(ann)
            assert m.shape == (info["height"], info["width"])
            assert int(m.sum()) == ann["area"] > 0
            # the box is the tight box of the visible mask
            assert list(mask_utils.toBbox(ann["segmentation"])) == ann["bbox"]


def test_empty_images_present(dataset: dict) -> None:
    for key in ("train_ann", "val_ann"):
        coco = _load(dataset[key])
        with_anns = {a["image_id"] for a in coco["annotations"]}
        empty = [im for im in coco["images"] if im["id"] not in with_anns]
        assert len(empty) >= 1
        assert len(empty) < len(coco["images"]) / 2


def test_scale_variation(dataset: dict) -> None:
    areas = [a["bbox"][2] * a["bbox"][3] for a in _load(dataset["train_ann"])["annotations"]]
    assert max(areas) / min(areas) >= 20


def test_occlusion_happens(dataset: dict) -> None:
    coco = _load(dataset["train_ann"])
    boxes: dict[int, list[list[float]]] = {}
    for a in coco["annotations"]:
        boxes.setdefault(a["image_id"], []).append(a["bbox"])
    overlapping = 0
    for bbs in boxes.values():
        for i in range(len(bbs)):
            for j in range(i + 1, len(bbs)):
                if _iou(bbs[i], bbs[j]) > 0.1:
                    overlapping += 1
    assert overlapping >= 3


def test_every_class_appears(dataset: dict) -> None:
    counts = Counter(a["category_id"] for a in _load(dataset["train_ann"])["annotations"])
    assert set(counts) == set(range(1, len(SYNTHETIC_CLASSES) + 1))


def test_variable_image_size(tmp_path: Path) -> None:
    paths = generate_synthetic_coco(str(tmp_path / "v"), num_train=6, num_val=0,
                                    image_size=(48, 80), seed=2)
    coco = _load(paths["train_ann"])
    sizes = {(im["width"], im["height"]) for im in coco["images"]}
    assert len(sizes) > 1
    for im in coco["images"]:
        assert 48 <= im["width"] <= 80 and 48 <= im["height"] <= 80
        img = cv2.imread(os.path.join(paths["train_img_dir"], im["file_name"]))
        assert img.shape == (im["height"], im["width"], 3)
    assert _load(paths["val_ann"])["images"] == []


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_synthetic_coco(str(tmp_path / "x"), image_size=(80, 40))
    with pytest.raises(ValueError):
        generate_synthetic_coco(str(tmp_path / "x"), image_size=8)
    with pytest.raises(ValueError):
        generate_synthetic_coco(str(tmp_path / "x"), seed=-1)
