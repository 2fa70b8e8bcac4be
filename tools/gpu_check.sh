#!/usr/bin/env bash
# The whole GPU check of mmkd in one command, for a bare GPU host without network:
#
#   bash tools/gpu_check.sh [--build-only | --check | --tests-only | --bench-only | --install-only]
#                           [--budget SECONDS] [--jobs N] [--wheels DIR]
#
# Stages, each time-stamped, logged to $OUT and summed up in $OUT/summary.md:
#   1. env      the GPU, torch, CUDA, nvcc and compiler versions;
#   2. install  the wheels of tools/fetch_gpu_wheels.sh (offline: pip --no-index), and
#               setuptools 80 / ninja from the same folder only where the host's are unusable;
#   3. mmcv     mmcv 2.1.0 with CUDA ops for this GPU's architecture, built from the carried sdist
#               with tools/patches/mmcv-2.1.0-cuda13.patch, all cores, build time printed. The
#               source, objects and wheel stay under $WORK (/tmp/mmkd_gpu): a second call on the
#               same host installs the wheel in seconds, and a build cut short by the time budget
#               resumes where it stopped;
#   4. mmkd     pip install --no-deps --no-build-isolation -e .
#   5. tests    pytest -m gpu tests/test_gpu.py (parallel workers when pytest-xdist is there);
#   6. bench    tools/benchmark_speed.py --coco: COCO-size step time, teacher share and peak memory
#               of every method against the plain student, AMP, with the targets checked and a
#               torch.profiler summary for the methods that miss one.
#
# Modes: default all stages; --build-only stops after mmcv; --check runs the tests and the
# benchmark with the mmcv an earlier call built on this host (building it only if there is
# none); --tests-only / --bench-only one of them; --install-only stops after the wheels (no GPU
# needed).
# The stages fit a time budget (--budget, default 570 s: one 10-minute command with a margin):
# a stage that cannot finish in what is left is skipped or cut short with a message saying which
# command finishes the job. Exit status 0 only when every stage that ran passed.
#
# Environment: OUT (results; default work_dirs/gpu_check), PYTHON (default python3), MMKD_GPU_WORK
# (default /tmp/mmkd_gpu), TORCH_CUDA_ARCH_LIST (default: the present GPU's, e.g. 9.0),
# MAX_JOBS (default nproc), CUDA_HOME (default: found from nvcc / torch), GPU_TEST_WORKERS
# (pytest-xdist workers, default 6), BENCH_EXTRA (more tools/benchmark_speed.py arguments; the
# last of a repeated option wins). GPU_CHECK_CPU_DRY_RUN=1 walks the stages on a machine without
# a GPU, to check the script itself: no mmcv build, the GPU tests skip (and count as failed),
# and BENCH_EXTRA='--device cpu --precision fp32 --size 96x64 ...' keeps the benchmark small.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ARGS_TEXT="$*"
MODE=all
BUDGET="${GPU_CHECK_BUDGET:-570}"
WHEELS="$REPO/gpu_wheels"
JOBS="${MAX_JOBS:-$(nproc)}"
while [ $# -gt 0 ]; do
  case "$1" in
    --build-only) MODE=build ;;
    --check) MODE=check ;;
    --tests-only) MODE=tests ;;
    --bench-only) MODE=bench ;;
    --install-only) MODE=install ;;
    --budget) BUDGET="$2"; shift ;;
    --jobs) JOBS="$2"; shift ;;
    --wheels) WHEELS="$(cd "$2" && pwd)"; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

PYTHON="${PYTHON:-python3}"
DRY="${GPU_CHECK_CPU_DRY_RUN:-0}"
OUT="${OUT:-$REPO/work_dirs/gpu_check}"
WORK="${MMKD_GPU_WORK:-/tmp/mmkd_gpu}"
PATCH="$REPO/tools/patches/mmcv-2.1.0-cuda13.patch"
SDIST="$WHEELS/mmcv-2.1.0.tar.gz"
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
T0=$(date +%s)

elapsed() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( BUDGET - $(elapsed) )); }
log() { printf '[gpu_check +%4ss %s] %s\n' "$(elapsed)" "$(date +%H:%M:%S)" "$*"; }
STAGES=()  # "name|status|seconds|note"
FAILED=0
record() {  # name status seconds note
  STAGES+=("$1|$2|$3|$4")
  case "$2" in FAIL|INCOMPLETE) FAILED=1 ;; esac
  log "stage $1: $2 (${3}s)${4:+ - $4}"
}
ENV_TEXT=""
NOTES=()

write_summary() {
  local f="$OUT/summary.md"
  {
    echo "# mmkd GPU check"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ), mode: $MODE, budget ${BUDGET}s, used $(elapsed)s"
    echo "- command: \`bash tools/gpu_check.sh ${ARGS_TEXT}\` (repo commit $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown))"
    echo
    echo '## Environment'
    echo
    echo '```'
    printf '%s\n' "$ENV_TEXT"
    echo '```'
    echo
    echo '## Stages'
    echo
    echo '| stage | status | seconds | note |'
    echo '|---|---|---|---|'
    for s in "${STAGES[@]}"; do
      IFS='|' read -r n st sec note <<<"$s"
      echo "| $n | $st | $sec | $note |"
    done
    if [ ${#NOTES[@]} -gt 0 ]; then
      echo
      echo '## Notes'
      echo
      printf -- '- %s\n' "${NOTES[@]}"
    fi
    if [ -f "$OUT/pytest_gpu.log" ]; then
      echo
      echo '## GPU tests (last lines of pytest_gpu.log)'
      echo
      echo '```'
      grep -E '^(FAILED|ERROR|SKIPPED)|passed|failed|error' "$OUT/pytest_gpu.log" | tail -n 40
      echo '```'
    fi
    if [ -f "$OUT/speed.md" ]; then
      echo
      cat "$OUT/speed.md"
    fi
    echo
    echo "Overall: $([ $FAILED = 0 ] && echo PASS || echo FAIL). Logs: install.log, mmcv_build.log, pytest_gpu.log, speed.log, speed.md, speed.json."
  } >"$f"
}
finish() {
  write_summary
  echo
  echo "================ summary ($OUT/summary.md) ================"
  sed -n '/^## Stages/,$p' "$OUT/summary.md"
  exit $FAILED
}
trap finish EXIT
trap 'log "interrupted"; FAILED=1; exit 1' INT TERM

# ---------------------------------------------------------------- 1. env
stage_env() {
  local t=$(date +%s)
  command -v "$PYTHON" >/dev/null || { record env FAIL 0 "no $PYTHON on PATH (set PYTHON)"; return 1; }
  ENV_TEXT="$("$PYTHON" - <<'PY' 2>&1
import os, platform, sys
print(f'python {sys.version.split()[0]} at {sys.executable}')
try:
    import torch
    print(f'torch {torch.__version__}, built for CUDA {torch.version.cuda}, cudnn '
          f'{torch.backends.cudnn.version()}')
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print(f'GPU: {torch.cuda.get_device_name(0)}, capability {p.major}.{p.minor}, '
              f'{p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, '
              f'{torch.cuda.device_count()} device(s)')
    else:
        print('GPU: none visible to torch')
except Exception as exc:  # reported, the stage fails below
    print(f'torch: import failed: {exc}')
print(f'cpu: {os.cpu_count()} cores, {platform.machine()}, {platform.platform()}')
PY
)"
  ENV_TEXT+=$'\n'"nvidia-smi: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -n 2 | tr '\n' ' ')"
  NVCC="$(command -v nvcc || true)"
  for c in "${CUDA_HOME:-}/bin/nvcc" /usr/local/cuda/bin/nvcc; do
    [ -z "$NVCC" ] && [ -x "$c" ] && NVCC="$c"
  done
  if [ -z "$NVCC" ]; then
    c="$("$PYTHON" -c 'from torch.utils.cpp_extension import CUDA_HOME; print(CUDA_HOME or "")' 2>/dev/null)"
    [ -n "$c" ] && [ -x "$c/bin/nvcc" ] && NVCC="$c/bin/nvcc"
  fi
  if [ -n "$NVCC" ]; then
    export CUDA_HOME="${CUDA_HOME:-$(dirname "$(dirname "$(readlink -f "$NVCC")")")}"
    export PATH="$(dirname "$NVCC"):$PATH"
    ENV_TEXT+=$'\n'"nvcc: $NVCC ($("$NVCC" --version | grep -o 'release [0-9.]*' | head -n1)), CUDA_HOME=$CUDA_HOME"
  else
    ENV_TEXT+=$'\n'"nvcc: not found (PATH, \$CUDA_HOME, /usr/local/cuda, torch's CUDA_HOME)"
  fi
  ENV_TEXT+=$'\n'"c++: $(c++ --version 2>&1 | head -n1); ninja: $(ninja --version 2>&1 | head -n1)"
  ENV_TEXT+=$'\n'"memory: $(free -g 2>/dev/null | awk '/^Mem:/ {print $2 " GiB total, " $7 " GiB available"}'); /tmp free: $(df -h /tmp 2>/dev/null | awk 'NR==2 {print $4}')"
  printf '%s\n' "$ENV_TEXT" | sed 's/^/    /'
  if ! grep -q '^GPU: .*capability' <<<"$ENV_TEXT" && [ "$MODE" != install ] && [ "$DRY" != 1 ]; then
    record env FAIL $(( $(date +%s) - t )) "no CUDA device visible to torch"
    return 1
  fi
  record env ok $(( $(date +%s) - t )) ""
}

# ---------------------------------------------------------------- 2. install
pipi() { "$PYTHON" -m pip install --no-index --no-deps --find-links "$WHEELS" "$@"; }
stage_install() {
  local t=$(date +%s) log="$OUT/install.log"
  : >"$log"
  if [ ! -d "$WHEELS" ] || ! ls "$WHEELS"/mmengine-*.whl >/dev/null 2>&1; then
    record install FAIL 0 "no wheels in $WHEELS: run bash tools/fetch_gpu_wheels.sh on a machine with network and carry the folder"
    return 1
  fi
  local site
  site="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  if [ ! -w "$site" ]; then
    record install FAIL 0 "$site is not writable: run as its owner or in a virtual environment"
    return 1
  fi
  # mmengine 0.10.7 and mmcv's setup.py import pkg_resources, gone from setuptools >= 81
  if ! "$PYTHON" -c 'import pkg_resources' >>"$log" 2>&1; then
    log "host setuptools $("$PYTHON" -c 'import setuptools; print(setuptools.__version__)' 2>/dev/null) has no pkg_resources: installing setuptools from $WHEELS"
    pipi "$(ls "$WHEELS"/setuptools-*.whl)" >>"$log" 2>&1 \
      || { record install FAIL $(( $(date +%s) - t )) "setuptools install failed (install.log)"; return 1; }
  fi
  # torch's extension builder needs the ninja executable (else a serial, far slower build)
  if ! ninja --version >/dev/null 2>&1; then
    log "no ninja on PATH: installing it from $WHEELS"
    pipi "$(ls "$WHEELS"/ninja-*.whl)" >>"$log" 2>&1 \
      || { record install FAIL $(( $(date +%s) - t )) "ninja install failed (install.log)"; return 1; }
    export PATH="$(dirname "$("$PYTHON" -c 'import sys; print(sys.executable)')"):$PATH"
  fi
  local specs=()
  for w in "$WHEELS"/*.whl; do
    local b name ver
    b="$(basename "$w")"; name="${b%%-*}"; ver="$(cut -d- -f2 <<<"$b")"
    case "$name" in setuptools|ninja) continue ;; esac
    specs+=("$name==$ver")
  done
  log "installing ${specs[*]}"
  if ! pipi "${specs[@]}" >>"$log" 2>&1; then
    tail -n 20 "$log" | sed 's/^/    /'
    record install FAIL $(( $(date +%s) - t )) "pip install from $WHEELS failed (install.log)"
    return 1
  fi
  if ! "$PYTHON" -c 'import mmengine, pycocotools.coco, shapely, terminaltables, pkg_resources; from mmengine.utils import get_installed_path; print("mmengine", mmengine.__version__)' >>"$log" 2>&1; then
    tail -n 20 "$log" | sed 's/^/    /'
    record install FAIL $(( $(date +%s) - t )) "the installed packages do not import (install.log)"
    return 1
  fi
  record install ok $(( $(date +%s) - t )) "${#specs[@]} wheels"
}

# ---------------------------------------------------------------- 3. mmcv
mmcv_ok() {  # mmcv 2.1.0 whose compiled ops run on this GPU
  "$PYTHON" - <<'PY' >>"$OUT/install.log" 2>&1
import mmcv
import torch
from mmcv.ops import get_compiling_cuda_version, nms
assert mmcv.__version__ == '2.1.0', mmcv.__version__
cuda = get_compiling_cuda_version()
assert cuda != 'not available', 'mmcv was compiled without CUDA'
boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=torch.float,
                     device='cuda')
_, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7], device='cuda'), 0.5)
assert keep.tolist() == [0, 2], keep
print(f'mmcv {mmcv.__version__} ops compiled with CUDA {cuda}: ok on {torch.cuda.get_device_name()}')
PY
}
stage_mmcv() {
  local t=$(date +%s) blog="$OUT/mmcv_build.log"
  if [ "$DRY" = 1 ]; then
    record mmcv SKIPPED 0 "CPU dry run: no build"
    return 0
  fi
  if mmcv_ok; then
    record mmcv ok $(( $(date +%s) - t )) "already installed with CUDA ops"
    return 0
  fi
  [ -f "$SDIST" ] || { record mmcv FAIL 0 "no $SDIST (tools/fetch_gpu_wheels.sh fetches it)"; return 1; }
  local arch="${TORCH_CUDA_ARCH_LIST:-$("$PYTHON" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}"
  local tv key
  tv="$("$PYTHON" -c 'import torch, sys; print(torch.__version__, "py%d%d" % sys.version_info[:2])')"
  key="mmcv-2.1.0 torch $tv arch $arch patch $(sha256sum "$PATCH" | cut -c1-12)"
  local house="$WORK/wheelhouse" src="$WORK/src/mmcv-2.1.0"
  if [ -f "$house/KEY" ] && [ "$(cat "$house/KEY")" = "$key" ] && ls "$house"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
    log "installing the mmcv wheel built earlier on this host ($house)"
    if pipi --force-reinstall "$(ls "$house"/mmcv-2.1.0-*.whl | head -n1)" >>"$OUT/install.log" 2>&1 && mmcv_ok; then
      record mmcv ok $(( $(date +%s) - t )) "wheel from an earlier call on this host"
      return 0
    fi
    log "that wheel does not work here: rebuilding"
  fi
  [ -n "${NVCC:-}" ] || { record mmcv FAIL 0 "no nvcc: set CUDA_HOME to the CUDA toolkit"; return 1; }
  if [ ! -f "$src/.mmkd-key" ] || [ "$(cat "$src/.mmkd-key")" != "$key" ]; then
    rm -rf "$src" && mkdir -p "$WORK/src" && tar xzf "$SDIST" -C "$WORK/src" || {
      record mmcv FAIL 0 "could not unpack $SDIST"; return 1; }
    if ! "$PYTHON" "$REPO/tools/patches/apply_patch.py" "$PATCH" "$src" | sed 's/^/    /'; then
      record mmcv FAIL 0 "$PATCH does not apply to the sdist"
      return 1
    fi
    echo "$key" >"$src/.mmkd-key"
  else
    log "resuming the build in $src (objects of an earlier call kept)"
  fi
  # nvcc and the host compiler must agree before a 5-minute build: a 5-second probe
  local probe="$WORK/probe" sm="${arch%%[ ;+]*}"; sm="${sm/./}"
  mkdir -p "$probe"
  printf '__global__ void k(float *x) { x[threadIdx.x] += 1.f; }\nint main() { return 0; }\n' >"$probe/p.cu"
  if ! "$NVCC" -std=c++17 -arch="sm_$sm" -c "$probe/p.cu" -o "$probe/p.o" >"$probe/log" 2>&1; then
    if grep -q 'unsupported GNU version\|unsupported .*compiler' "$probe/log"; then
      log "nvcc rejects this host compiler's version: adding -allow-unsupported-compiler"
      export MMCV_CUDA_ARGS="${MMCV_CUDA_ARGS:+$MMCV_CUDA_ARGS }-allow-unsupported-compiler"
      NOTES+=("nvcc needed -allow-unsupported-compiler with $(c++ --version | head -n1)")
    else
      sed 's/^/    /' "$probe/log"
      record mmcv FAIL $(( $(date +%s) - t )) "nvcc cannot compile a trivial kernel for sm_$sm"
      return 1
    fi
  fi
  # the build may use all the time left: the tests need it, and a cut build resumes on a rerun
  local limit=$(( $(left) - 20 ))
  if [ "$limit" -lt 60 ]; then
    record mmcv INCOMPLETE $(( $(date +%s) - t )) "no time left to build; rerun"
    return 1
  fi
  log "building mmcv 2.1.0: FORCE_CUDA=1 MMCV_WITH_OPS=1 TORCH_CUDA_ARCH_LIST=$arch MAX_JOBS=$JOBS (log: mmcv_build.log; stopped after ${limit}s)"
  local b0=$(date +%s)
  mkdir -p "$house"
  rm -f "$house"/mmcv-2.1.0-*.whl "$house/KEY"
  ( cd "$src" && FORCE_CUDA=1 MMCV_WITH_OPS=1 TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS="$JOBS" \
      exec timeout --signal=TERM --kill-after=10 "$limit" "$PYTHON" -m pip wheel -v --no-deps \
      --no-build-isolation --no-index -w "$house" . ) >>"$blog" 2>&1 &
  local pid=$! i=0
  while sleep 5 && kill -0 "$pid" 2>/dev/null; do
    i=$((i + 1))
    [ $((i % 6)) = 0 ] && log "  building mmcv ... $(( $(date +%s) - b0 ))s, compiled $(grep -o '^\[[0-9]*/[0-9]*\]' "$blog" | tail -n1)"
  done
  wait "$pid"
  local rc=$? secs=$(( $(date +%s) - b0 ))
  # keep the log inside the 16 MiB a returned file may have
  if [ "$(stat -c %s "$blog")" -gt $((15 * 1048576)) ]; then
    { head -c 2000000 "$blog"; echo; echo '[... cut by gpu_check.sh ...]'; tail -c 12000000 "$blog"; } >"$blog.cut" && mv "$blog.cut" "$blog"
  fi
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    NOTES+=("the mmcv build was stopped after ${secs}s at the time budget, $(grep -o '^\[[0-9]*/[0-9]*\]' "$blog" | tail -n1) compiled; its objects stay in $src/build: run the same command again on this host to finish it")
    record mmcv INCOMPLETE "$secs" "build stopped at the time budget; rerun on this host resumes it"
    return 1
  fi
  if [ "$rc" != 0 ]; then
    log "mmcv build failed (exit $rc); first errors:"
    grep -n -m 25 -E 'error:|error [A-Z]+[0-9]+|Error [0-9]+|FAILED:|fatal' "$blog" | sed 's/^/    /'
    NOTES+=("mmcv build failed after ${secs}s; first error: $(grep -m1 -E 'error:|fatal' "$blog" | cut -c1-300)")
    record mmcv FAIL "$secs" "build failed (mmcv_build.log)"
    return 1
  fi
  log "mmcv build time: ${secs}s with $JOBS jobs for arch $arch"
  NOTES+=("mmcv 2.1.0 CUDA build: ${secs}s, $JOBS jobs, TORCH_CUDA_ARCH_LIST=$arch, $(grep -o 'release [0-9.]*' <<<"$ENV_TEXT" | head -n1)")
  echo "$key" >"$house/KEY"
  if ! pipi --force-reinstall "$(ls "$house"/mmcv-2.1.0-*.whl | head -n1)" >>"$OUT/install.log" 2>&1 || ! mmcv_ok; then
    tail -n 15 "$OUT/install.log" | sed 's/^/    /'
    record mmcv FAIL "$secs" "built, but the wheel does not install or its CUDA ops fail (install.log)"
    return 1
  fi
  record mmcv ok "$secs" "built in ${secs}s ($JOBS jobs, arch $arch)"
}

# ---------------------------------------------------------------- 4. mmkd
stage_mmkd() {
  local t=$(date +%s)
  if ! "$PYTHON" -m pip install --no-index --no-deps --no-build-isolation -e "$REPO" >>"$OUT/install.log" 2>&1; then
    tail -n 15 "$OUT/install.log" | sed 's/^/    /'
    record mmkd FAIL $(( $(date +%s) - t )) "pip install -e . failed (install.log)"
    return 1
  fi
  if ! (cd / && "$PYTHON" -c 'import mmkd, mmdet, mmcv.ops; print("mmkd", mmkd.__version__, "from", mmkd.__file__)') >>"$OUT/install.log" 2>&1; then
    record mmkd FAIL $(( $(date +%s) - t )) "mmkd does not import after the install (install.log)"
    return 1
  fi
  record mmkd ok $(( $(date +%s) - t )) ""
}

# ---------------------------------------------------------------- 5. tests
TESTS_MIN=100
BENCH_MIN=80
stage_tests() {
  local t=$(date +%s) limit=$(( $(left) - 15 ))
  # with the benchmark still to come, leave it its minimum when the tests keep theirs;
  # otherwise the tests go first and the benchmark gets what is left, if anything
  if [ "$MODE" != tests ] && [ $(( limit - BENCH_MIN )) -ge "$TESTS_MIN" ]; then
    limit=$(( limit - BENCH_MIN ))
  fi
  if [ "$limit" -lt 30 ]; then
    record tests SKIPPED 0 "no time left; run bash tools/gpu_check.sh --tests-only on this host"
    FAILED=1
    return 1
  fi
  local xdist=() workers=1
  if "$PYTHON" -c 'import xdist' 2>/dev/null; then
    workers="${GPU_TEST_WORKERS:-6}"
    xdist=(-n "$workers")
  fi
  log "pytest -m gpu tests/test_gpu.py ${xdist[*]} (stopped after ${limit}s; log: pytest_gpu.log)"
  (cd "$REPO" && OMP_NUM_THREADS=$(( JOBS / workers > 0 ? JOBS / workers : 1 )) \
     timeout --signal=TERM --kill-after=10 "$limit" "$PYTHON" -m pytest -m gpu \
     tests/test_gpu.py -v -rs -p no:cacheprovider --durations=15 "${xdist[@]}") \
     >"$OUT/pytest_gpu.log" 2>&1
  local rc=$? secs=$(( $(date +%s) - t ))
  local last
  last="$(grep -E '(passed|failed|error|skipped|no tests ran)' "$OUT/pytest_gpu.log" | tail -n1 | tr -d '=' | sed 's/^ *//')"
  grep -E '^(FAILED|ERROR)' "$OUT/pytest_gpu.log" | head -n 30 | sed 's/^/    /'
  case "$rc" in
    0)
      if grep -q 'skipped' <<<"$last"; then
        record tests FAIL "$secs" "$last: on a GPU host no test may skip (reasons in pytest_gpu.log)"
      else
        record tests ok "$secs" "$last"
      fi ;;
    124|137) record tests INCOMPLETE "$secs" "stopped at the time budget ($last); run --tests-only on this host" ;;
    5) record tests FAIL "$secs" "no test collected" ;;
    *) record tests FAIL "$secs" "${last:-pytest exited $rc}" ;;
  esac
}

# ---------------------------------------------------------------- 6. bench
stage_bench() {
  local t=$(date +%s) limit=$(( $(left) - 10 ))
  if [ "$limit" -lt 45 ]; then
    record bench SKIPPED 0 "no time left; run bash tools/gpu_check.sh --bench-only on this host"
    FAILED=1
    return 1
  fi
  log "tools/benchmark_speed.py --coco (stopped after ${limit}s; log: speed.log)"
  (cd "$REPO" && timeout --signal=TERM --kill-after=10 "$limit" "$PYTHON" tools/benchmark_speed.py \
     --coco --precision amp --warmup "${BENCH_WARMUP:-2}" --iters "${BENCH_ITERS:-6}" --doc '' \
     --profile --time-limit $(( limit - 25 )) --out-md "$OUT/speed.md" --out-json "$OUT/speed.json" \
     ${BENCH_EXTRA:-}) \
     >"$OUT/speed.log" 2>&1
  local rc=$? secs=$(( $(date +%s) - t ))
  case "$rc" in
    0) record bench ok "$secs" "every method meets the targets" ;;
    3) record bench ok "$secs" "measured; some methods miss a target (speed.md, profile in speed.log)" ;;
    124|137) record bench INCOMPLETE "$secs" "stopped at the time budget; run --bench-only on this host" ;;
    *) tail -n 25 "$OUT/speed.log" | sed 's/^/    /'
       record bench FAIL "$secs" "benchmark_speed.py exited $rc (speed.log)" ;;
  esac
}

log "mmkd GPU check, mode $MODE, budget ${BUDGET}s, results in $OUT"
stage_env || exit 1
stage_install || exit 1
[ "$MODE" = install ] && exit 0
case "$MODE" in
  all|build) stage_mmcv || exit 1 ;;
  *)
    if [ "$DRY" = 1 ] || ! mmcv_ok; then
      # an earlier call on this host may have left the wheel in /tmp
      stage_mmcv || exit 1
    else
      record mmcv ok 0 "already installed with CUDA ops"
    fi ;;
esac
[ "$MODE" = build ] && exit 0
stage_mmkd
case "$MODE" in
  all|check) stage_tests; stage_bench ;;
  tests) stage_tests ;;
  bench) stage_bench ;;
esac
