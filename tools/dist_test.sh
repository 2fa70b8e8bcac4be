#!/usr/bin/env bash
# Distributed testing: bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [tools/test.py args]
# Multi-machine variables (NNODES, NODE_RANK, MASTER_ADDR, PORT): see tools/dist_launch.sh.
set -euo pipefail
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
shift 3
exec bash "$(dirname "${BASH_SOURCE[0]}")/dist_launch.sh" test.py "$NPROC" "$CONFIG" \
  "$CHECKPOINT" --launcher pytorch "$@"
