#!/usr/bin/env bash
# Distributed training: bash tools/dist_train.sh CONFIG NUM_PROCS [tools/train.py args]
# Multi-machine variables (NNODES, NODE_RANK, MASTER_ADDR, PORT): see tools/dist_launch.sh.
set -euo pipefail
CONFIG=$1
NPROC=$2
shift 2
exec bash "$(dirname "${BASH_SOURCE[0]}")/dist_launch.sh" train.py "$NPROC" "$CONFIG" \
  --launcher pytorch "$@"
