#!/usr/bin/env bash
# Create (or refresh) the repo-local virtual environment with the pinned mmkd stack.
#
# requirements.txt is the exact tested stack (pins); pyproject.toml holds mmkd's own dependency
# ranges, which a user's existing mmdet environment satisfies without reinstalling torch/mmcv.
#
# Idempotent: when the environment already matches requirements.txt, pyproject.toml, setup.py
# and this script, it returns in seconds.
#
# mmcv 2.1.0 with compiled ops has no wheel on PyPI for this torch, so it is built from the
# sdist once per machine and the wheel is cached outside the repo:
#   MMKD_MMCV_WHEEL=/path/to/mmcv-2.1.0-*.whl   use this prebuilt wheel (skips the build)
#   MMKD_WHEEL_CACHE=/dir                       where built wheels are kept
#                                               (default: ~/.cache/mmkd/wheels)
#   PIP_FIND_LINKS=/dir                         a pip find-links folder holding an mmcv wheel
#   MMKD_VENV=/path                             environment location (default: <repo>/.venv)
#   MAX_JOBS=N                                  parallel compile jobs (default: nproc)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMKD_VENV:-$REPO/.venv}"
CACHE="${MMKD_WHEEL_CACHE:-$HOME/.cache/mmkd/wheels}"
PY="${PYTHON:-python3}"
# the pins of requirements.txt (one source of truth)
pin() { sed -n "s/^$1==\([^ ;#]*\).*/\1/p" "$REPO/requirements.txt" | head -n1; }
MMCV_VERSION="$(pin mmcv)"
TORCH_VERSION="$(pin torch)"
SETUPTOOLS_VERSION="$(pin setuptools)"
WHEEL_VERSION="$(pin wheel)"

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment in $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip --disable-pip-version-check)
# pip prints one "Location ... is ignored" warning per package for find-links folders that do not
# exist on this machine; keep real errors, drop that noise.
quiet_pip() { "${PIP[@]}" "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

STAMP="$VENV/.mmkd-setup-stamp"
WANT_STAMP="$(cat "$REPO/requirements.txt" "$REPO/pyproject.toml" "$REPO/setup.py" \
  "$REPO/MANIFEST.in" "$0" | sha256sum | cut -c1-16)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT_STAMP" ] \
   && "$VPY" -c "import mmcv.ops, mmdet, mmkd" >/dev/null 2>&1; then
  log "environment up to date ($VENV)"
  exit 0
fi

log "installing build prerequisites (torch $TORCH_VERSION CPU, numpy, setuptools $SETUPTOOLS_VERSION, wheel, ninja)"
quiet_pip install -q "torch==$TORCH_VERSION" "numpy==$(pin numpy)" "setuptools==$SETUPTOOLS_VERSION" \
  "wheel==$WHEEL_VERSION" ninja

have_mmcv_ops() {
  "$VPY" - "$MMCV_VERSION" <<'PY' >/dev/null 2>&1
import mmcv, mmcv.ops
from mmcv.ops import RoIAlign, nms  # noqa: F401  compiled ops must import
import sys
assert mmcv.__version__ == sys.argv[1]
PY
}

if have_mmcv_ops; then
  log "mmcv $MMCV_VERSION with ops already installed"
else
  PYTAG="$("$VPY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
  # The wheel's C++ ops are tied to the torch ABI: key the cache on torch + python versions.
  KEY_DIR="$CACHE/torch${TORCH_VERSION}-${PYTAG}$( [ "${FORCE_CUDA:-0}" = 1 ] && echo -cuda || true)"
  WHEEL=""
  if [ -n "${MMKD_MMCV_WHEEL:-}" ]; then
    [ -f "$MMKD_MMCV_WHEEL" ] || { echo "MMKD_MMCV_WHEEL=$MMKD_MMCV_WHEEL does not exist" >&2; exit 1; }
    WHEEL="$MMKD_MMCV_WHEEL"; log "using prebuilt mmcv wheel from MMKD_MMCV_WHEEL: $WHEEL"
  else
    for d in "$KEY_DIR" ${PIP_FIND_LINKS:-}; do
      c="$(ls "$d"/mmcv-"$MMCV_VERSION"-*"$PYTAG"*.whl 2>/dev/null | head -n1 || true)"
      if [ -n "$c" ]; then WHEEL="$c"; log "using cached mmcv wheel $WHEEL"; break; fi
    done
  fi
  if [ -z "$WHEEL" ]; then
    mkdir -p "$KEY_DIR"
    BUILD_LOG="$KEY_DIR/build-$(date +%Y%m%d-%H%M%S).log"
    log "no mmcv $MMCV_VERSION wheel found: building it from source with compiled CPU ops"
    log "this takes about 15 minutes on 2 cores, once per machine; log: $BUILD_LOG"
    export MMCV_WITH_OPS=1 FORCE_CUDA="${FORCE_CUDA:-0}" MAX_JOBS="${MAX_JOBS:-$(nproc)}"
    "${PIP[@]}" wheel -v --no-deps --no-build-isolation -w "$KEY_DIR" "mmcv==$MMCV_VERSION" \
      >"$BUILD_LOG" 2>&1 &
    BPID=$!
    START=$(date +%s)
    while kill -0 "$BPID" 2>/dev/null; do
      sleep 20
      STEP="$(grep -oE '^ *\[[0-9]+/[0-9]+\]' "$BUILD_LOG" | tail -n1 | tr -d ' ' || true)"
      log "  building mmcv ... $(( $(date +%s) - START ))s elapsed ${STEP:+compiled $STEP}"
    done
    if ! wait "$BPID"; then
      echo "mmcv build failed; last lines of $BUILD_LOG:" >&2; tail -n 40 "$BUILD_LOG" >&2; exit 1
    fi
    WHEEL="$(ls "$KEY_DIR"/mmcv-"$MMCV_VERSION"-*.whl | head -n1)"
    log "built $WHEEL in $(( $(date +%s) - START ))s"
  fi
  quiet_pip install -q --no-deps --force-reinstall "$WHEEL"
fi

log "installing the pinned stack from requirements.txt (with the lint tools) and mmkd (editable)"
quiet_pip install -q -r "$REPO/requirements.txt"
quiet_pip install -q --no-deps --no-build-isolation -e "$REPO"
"$VPY" - <<'PY'
import torch, mmengine, mmcv, mmdet, mmcv.ops, mmkd
print(f"torch {torch.__version__} | mmengine {mmengine.__version__} | mmcv {mmcv.__version__} (ops ok) | mmdet {mmdet.__version__} | mmkd {mmkd.__version__}")
PY
echo "$WANT_STAMP" > "$STAMP"
log "environment ready: $VENV"
