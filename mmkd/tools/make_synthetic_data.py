"""Generate the synthetic shapes data set (COCO format) used by mmkd tests and demos.

Usage::

    python tools/make_synthetic_data.py OUT_DIR [--num-train N] [--num-val N]
        [--image-size S | --image-size MIN MAX] [--seed S] [--max-objects N] [--force]
    python -m mmkd.tools.make_synthetic_data OUT_DIR ...     (after pip install; same flags)
    mmkd-make-synthetic-data OUT_DIR ...

Prints the output paths and, per split, the number of images, objects and empty
images, and the number of objects per class.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter

from ..datasets.synthetic import SYNTHETIC_CLASSES, generate_synthetic_coco


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="output folder")
    parser.add_argument("--num-train", type=int, default=400, help="number of training images")
    parser.add_argument("--num-val", type=int, default=100, help="number of validation images")
    parser.add_argument("--image-size", type=int, nargs="+", default=[160], metavar="S",
                        help="S for S x S images, or MIN MAX for random sizes per image")
    parser.add_argument("--seed", type=int, default=0, help="base seed")
    parser.add_argument("--max-objects", type=int, default=8, help="max objects per image")
    parser.add_argument("--force", action="store_true", help="regenerate even if up to date")
    args = parser.parse_args(argv)
    if len(args.image_size) not in (1, 2):
        parser.error("--image-size takes one value (S) or two values (MIN MAX)")
    return args


def summarise(ann_file: str) -> dict:
    """Counts of images, objects, empty images and objects per class in a COCO json."""
    with open(ann_file, encoding="utf-8") as f:
        coco = json.load(f)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    per_image = Counter(a["image_id"] for a in coco["annotations"])
    per_class = Counter(names[a["category_id"]] for a in coco["annotations"])
    return {
        "images": len(coco["images"]),
        "objects": len(coco["annotations"]),
        "empty_images": sum(1 for im in coco["images"] if per_image[im["id"]] == 0),
        "per_class": {name: per_class.get(name, 0) for name in SYNTHETIC_CLASSES},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = (args.image_size[0] if len(args.image_size) == 1
            else (args.image_size[0], args.image_size[1]))
    start = time.perf_counter()
    paths = generate_synthetic_coco(args.out_dir, num_train=args.num_train, num_val=args.num_val,
                                    image_size=size, seed=args.seed, max_objects=args.max_objects,
                                    force=args.force)
    elapsed = time.perf_counter() - start
    print(f"synthetic data ready in {elapsed:.2f} s")
    for key, value in paths.items():
        print(f"  {key:14s} {value}")
    for split in ("train", "val"):
        stats = summarise(paths[f"{split}_ann"])
        print(f"[{split}] images={stats['images']} objects={stats['objects']} "
              f"empty_images={stats['empty_images']}")
        print("  per class: " + ", ".join(f"{k}={v}" for k, v in stats["per_class"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
