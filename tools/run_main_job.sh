#!/usr/bin/env bash
# The main job on the built-in data, from a fresh clone:
#   1. set up the environment (tools/setup_env.sh; builds mmcv once per machine, then cached),
#   2. run the quick preset of the accuracy benchmark (tools/benchmark.py --preset quick):
#      generate the synthetic COCO-format data set (data/synthetic), evaluate the shipped
#      teacher (Faster R-CNN R34 half width, trained 36 epochs on this data), train the plain
#      student (R18 quarter width, 12 epochs) and the PGM+RDM student side by side, evaluate
#      both with COCO mAP (pycocotools) and print the table.
# About 15 minutes after setup on a 2-core CPU (measured: 15 min 57 s in a fresh clone, with another
# training sharing the cores); it prints its plan and estimate first, then progress lines.
# Finished runs are skipped, so an interrupted job continues where it stopped. Extra arguments
# go to tools/benchmark.py, e.g.  bash tools/run_main_job.sh --train-teacher
#   WORK=work_dirs/benchmark   output folder
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
bash tools/setup_env.sh
PY="${MMKD_VENV:-$REPO/.venv}/bin/python"
exec "$PY" tools/benchmark.py --preset quick --work-dir "${WORK:-work_dirs/benchmark}" "$@"
