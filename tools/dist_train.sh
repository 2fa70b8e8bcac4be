#!/usr/bin/env bash
# Distributed training on torchrun: bash tools/dist_train.sh CONFIG NUM_PROCS [extra args]
# Several machines: set NNODES, NODE_RANK, MASTER_ADDR and PORT on each (same PORT/MASTER_ADDR).
# Without GPUs the processes use the gloo backend on the CPU.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONFIG=$1
NPROC=$2
shift 2
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
  "$REPO/tools/train.py" "$CONFIG" --launcher pytorch "$@"
