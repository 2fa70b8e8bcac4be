#!/usr/bin/env bash
# Distributed testing on torchrun: bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [extra args]
# Several machines: set NNODES, NODE_RANK, MASTER_ADDR and PORT on each (same PORT/MASTER_ADDR).
# Without GPUs the processes use the gloo backend on the CPU.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
shift 3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PORT=${PORT:-29500}
if [ -z "${PYTHON:-}" ]; then
  if [ -z "${VIRTUAL_ENV:-}" ] && [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python; fi
fi
PYTHONPATH="$REPO:${PYTHONPATH:-}" exec "$PYTHON" -m torch.distributed.run \
  --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
  --nproc_per_node="$NPROC" --master_port="$PORT" \
  "$REPO/tools/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
