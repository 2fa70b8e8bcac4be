#!/usr/bin/env bash
# torchrun launcher shared by dist_train.sh and dist_test.sh:
#   bash tools/dist_launch.sh SCRIPT NUM_PROCS [script args]      (SCRIPT: train.py or test.py)
# The code is mmkd/tools/dist_launch.py (python -m mmkd.tools.dist_launch after pip install).
# One machine: a free port is picked by the launcher (set PORT to force one).
# Several machines: set NNODES, NODE_RANK, MASTER_ADDR and PORT on each (same PORT/MASTER_ADDR).
# Without GPUs the processes use the gloo backend on the CPU (tools/train.py and test.py set it).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPT=$1
shift
if [ -z "${PYTHON:-}" ]; then
  if [ -z "${VIRTUAL_ENV:-}" ] && [ -x "$REPO/.venv/bin/python" ]; then
    PYTHON="$REPO/.venv/bin/python"
  else
    PYTHON=python
  fi
fi
PYTHONPATH="$REPO:${PYTHONPATH:-}" exec "$PYTHON" -m mmkd.tools.dist_launch "${SCRIPT%.py}" "$@"
