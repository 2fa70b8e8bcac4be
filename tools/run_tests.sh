#!/usr/bin/env bash
# Set up the environment (idempotent; builds mmcv once per machine) and run the test suite.
#   bash tools/run_tests.sh [pytest args]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/tools/setup_env.sh"
cd "$REPO"
START=$(date +%s)
"${MMKD_VENV:-$REPO/.venv}/bin/python" -m pytest tests -q -p no:cacheprovider --durations=10 "$@"
echo "test suite wall time: $(( $(date +%s) - START ))s"
