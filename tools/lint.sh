#!/usr/bin/env bash
# Lint the checkout as CI does: ruff (pycodestyle + pyflakes, line length 100) and isort
# (OpenMMLab's import order); both configured in pyproject.toml, installed by tools/setup_env.sh
# from requirements.txt.   bash tools/lint.sh [--fix]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PY="${MMKD_VENV:-$REPO/.venv}/bin/python"
if [ "${1:-}" = "--fix" ]; then
  "$PY" -m isort .
  "$PY" -m ruff check --fix .
else
  "$PY" -m ruff check .
  "$PY" -m isort --check-only --diff .
fi
echo "lint: ruff and isort clean"
