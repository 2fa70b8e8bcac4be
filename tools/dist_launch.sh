#!/usr/bin/env bash
# torchrun launcher shared by dist_train.sh and dist_test.sh:
#   bash tools/dist_launch.sh SCRIPT NUM_PROCS [script args]
# One machine: a free port is picked by the launcher (set PORT to force one).
# Several machines: set NNODES, NODE_RANK, MASTER_ADDR and PORT on each (same PORT/MASTER_ADDR).
# Without GPUs the processes use the gloo backend on the CPU (tools/train.py and test.py set it).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPT=$1
NPROC=$2
shift 2
if [ -z "${PYTHON:-}" ]; then
  if [ -z "${VIRTUAL_ENV:-}" ] && [ -x "$REPO/.venv/bin/python" ]; then
    PYTHON="$REPO/.venv/bin/python"
  else
    PYTHON=python
  fi
fi
if [ "${NNODES:-1}" = "1" ] && [ -z "${PORT:-}" ]; then
  # one machine, no PORT given: torchrun's --standalone binds a free port itself (port 0), so
  # two jobs on one machine never collide and no port is chosen first and bound later (a race)
  RDZV=(--standalone)
else
  RDZV=(--nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}"
        --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}")
fi
PYTHONPATH="$REPO:${PYTHONPATH:-}" exec "$PYTHON" -m torch.distributed.run "${RDZV[@]}" \
  --nproc_per_node="$NPROC" "$REPO/tools/$SCRIPT" "$@"
