#!/usr/bin/env bash
# Download, on a machine with network access, everything a bare GPU host needs to run
# tools/gpu_check.sh offline: cp312 manylinux x86-64 wheels of mmengine, mmdet, pycocotools and
# their dependencies that the host lacks, plus the mmcv 2.1.0 source distribution (built there
# with CUDA ops).
#
#   bash tools/fetch_gpu_wheels.sh [DEST]          (default DEST: <repo>/gpu_wheels, git-ignored)
#
# The GPU host (see tools/gpu_check.sh) has Python 3.12, torch + torchvision with CUDA, numpy,
# opencv(-headless), matplotlib, scipy, pytest, pyyaml, rich, tqdm, six, packaging, pillow, ninja
# and setuptools; it has no network. The set below is pinned to the versions the CPU test
# environment (tools/setup_env.sh) runs, and checked for completeness: every requirement of every
# wheel must be in the folder or in HOST_PROVIDES, else the script fails and names it.
# setuptools 80 (the last release with pkg_resources, which mmengine 0.10.7 and the mmcv build
# import) and ninja travel too; gpu_check.sh installs them only where the host's are unusable.
#
# Environment: PYTHON (interpreter whose pip downloads; default: <repo>/.venv/bin/python, else
# python3), MAX_WHEEL_MIB (default 60), MAX_TREE_MIB (what travels to the device: tracked and
# untracked-not-ignored files plus DEST; default 64).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${1:-$REPO/gpu_wheels}"
MAX_WHEEL_MIB="${MAX_WHEEL_MIB:-60}"
MAX_TREE_MIB="${MAX_TREE_MIB:-64}"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi

# name==version: the versions tools/setup_env.sh installs on the CPU machines (tested there)
WHEELS=(
  mmengine==0.10.7
  mmdet==3.3.0
  pycocotools==2.0.11
  shapely==2.2.0
  terminaltables==3.1.10
  addict==2.4.0
  yapf==0.43.0
  platformdirs==4.14.8
  termcolor==3.3.0
  setuptools==80.10.2
  ninja==1.13.0
)
MMCV_SDIST=mmcv-2.1.0.tar.gz
MMCV_SHA256=d387bcab66b467479b6660310e23746cfc79c6e57acf04094680adb499a5cd3f
# Distributions the GPU host already has (KINDS.md of the device tool); opencv-python is
# satisfied by opencv-python-headless there (same cv2 module).
HOST_PROVIDES="torch torchvision numpy opencv-python opencv-python-headless matplotlib scipy \
pytest pyyaml rich tqdm six packaging pillow regex cython setuptools wheel ninja"

log() { printf '[fetch %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[fetch] ERROR: %s\n' "$*" >&2; exit 1; }

mkdir -p "$DEST"
PIP=("$PYTHON" -m pip --disable-pip-version-check)
# pip warns once per package about find-links/index folders that do not exist here: drop that
# noise, keep real errors.
pip_() { "${PIP[@]}" "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
PLATFORM=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
          --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
          --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64
          --platform manylinux1_x86_64)

log "downloading ${#WHEELS[@]} wheels for CPython 3.12 manylinux x86-64 into $DEST"
for spec in "${WHEELS[@]}"; do
  name="${spec%%==*}"; ver="${spec##*==}"
  norm="$(printf '%s' "$name" | tr '-' '_')"
  if ls "$DEST/${norm}-${ver}-"*.whl >/dev/null 2>&1; then
    log "  have $spec"
    continue
  fi
  if ! pip_ download --quiet --no-deps --only-binary=:all: "${PLATFORM[@]}" \
       -d "$DEST" "$spec"; then
    # A pure-Python project that publishes only an sdist becomes a wheel here; anything with
    # compiled code would be built for this machine's Python, so it must not pass.
    log "  no wheel for $spec on the index: building one from its sdist (pure Python only)"
    tmp="$(mktemp -d)"
    pip_ wheel --quiet --no-deps --no-binary=:all: -w "$tmp" "$spec" \
      || die "could not download or build a wheel of $spec"
    built="$(ls "$tmp"/*.whl)"
    case "$(basename "$built")" in
      *-py3-none-any.whl|*-py2.py3-none-any.whl) mv "$built" "$DEST/" ;;
      *) die "$spec built as $(basename "$built"), which is not pure Python: it cannot be built \
here for the GPU host's CPython 3.12; find a cp312 manylinux wheel" ;;
    esac
    rm -rf "$tmp"
  fi
  log "  got  $spec"
done

if [ ! -f "$DEST/$MMCV_SDIST" ]; then
  log "downloading the mmcv 2.1.0 sdist"
  # pip prepares the sdist's metadata in an isolated build environment, and mmcv's setup.py
  # imports pkg_resources, which setuptools >= 81 no longer has: cap setuptools there.
  cons="$(mktemp)"
  echo 'setuptools<81' >"$cons"
  PIP_CONSTRAINT="$cons" pip_ download --quiet --no-deps --no-binary=:all: -d "$DEST" \
    mmcv==2.1.0 || die "could not download the mmcv 2.1.0 sdist"
  rm -f "$cons"
fi
got="$(sha256sum "$DEST/$MMCV_SDIST" | cut -d' ' -f1)"
[ "$got" = "$MMCV_SHA256" ] || die "$DEST/$MMCV_SDIST has sha256 $got, expected $MMCV_SHA256"
log "mmcv sdist sha256 ok"

# Stray files (another version of a package) would make two candidates on the host: refuse.
"$PYTHON" - "$DEST" "$HOST_PROVIDES" "${WHEELS[@]}" <<'PY'
import email.parser
import os
import re
import sys
import zipfile

try:
    from packaging.markers import Marker
    from packaging.requirements import Requirement
except ImportError:  # pip always vendors packaging
    from pip._vendor.packaging.markers import Marker  # noqa: F401
    from pip._vendor.packaging.requirements import Requirement

dest, host, wanted = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
norm = lambda n: re.sub(r'[-_.]+', '-', n).lower()  # noqa: E731
env = dict(python_version='3.12', python_full_version='3.12.3', sys_platform='linux',
           platform_system='Linux', platform_machine='x86_64', os_name='posix',
           implementation_name='cpython', platform_python_implementation='CPython', extra='')
have = {}
for f in sorted(os.listdir(dest)):
    if f.endswith('.whl'):
        name, version = f.split('-')[:2]
        if norm(name) in have:
            sys.exit(f'[fetch] ERROR: two wheels of {name} in {dest}: remove one')
        have[norm(name)] = (version, f)
    elif f != 'mmcv-2.1.0.tar.gz':
        sys.exit(f'[fetch] ERROR: unexpected file {f} in {dest}: remove it')
for spec in wanted:
    name, version = spec.split('==')
    if have.get(norm(name), (None,))[0] != version:
        sys.exit(f'[fetch] ERROR: {spec} missing from {dest}')
extra = set(have) - {norm(s.split('==')[0]) for s in wanted}
if extra:
    sys.exit(f'[fetch] ERROR: wheels not in the pinned list: {sorted(extra)}; remove them')
# mmcv's own runtime requirements (requirements/runtime.txt of the sdist) join the closure
needs = {'mmcv': ['addict', 'mmengine>=0.3.0', 'numpy', 'packaging', 'Pillow', 'pyyaml', 'yapf',
                  'opencv-python>=3']}
for key, (version, f) in have.items():
    with zipfile.ZipFile(os.path.join(dest, f)) as z:
        meta = next(n for n in z.namelist() if n.endswith('.dist-info/METADATA'))
        msg = email.parser.Parser().parsestr(z.read(meta).decode())
    needs[key] = msg.get_all('Requires-Dist') or []
missing = []
for who, reqs in needs.items():
    for r in map(Requirement, reqs):
        if r.marker is not None and not r.marker.evaluate(env):
            continue  # an extra, another platform or another Python
        n = norm(r.name)
        if n in have:
            if have[n][0] not in r.specifier:
                missing.append(f'{who} needs {r}, folder has {n} {have[n][0]}')
        elif n not in {norm(h) for h in host}:
            missing.append(f'{who} needs {r}: neither in the folder nor on the host')
if missing:
    sys.exit('[fetch] ERROR: incomplete wheel set:\n  ' + '\n  '.join(missing))
print(f'[fetch] closure ok: every requirement is in the folder or on the GPU host')
PY

log "contents of $DEST:"
(cd "$DEST" && ls -l --block-size=K | tail -n +2 | awk '{printf "  %8s  %s\n", $5, $9}')
wheel_bytes="$(du -sb "$DEST" | cut -f1)"
tree_bytes="$(cd "$REPO" && { git ls-files -z; git ls-files -z --others --exclude-standard; } \
  | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')"
total=$((wheel_bytes + tree_bytes))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
log "wheel folder: $(mib "$wheel_bytes") MiB (limit $MAX_WHEEL_MIB MiB)"
log "working tree that travels: $(mib "$tree_bytes") MiB + wheels = $(mib "$total") MiB (limit $MAX_TREE_MIB MiB)"
[ "$wheel_bytes" -le $((MAX_WHEEL_MIB * 1048576)) ] \
  || die "the wheel folder is $(mib "$wheel_bytes") MiB, over $MAX_WHEEL_MIB MiB"
[ "$total" -le $((MAX_TREE_MIB * 1048576)) ] \
  || die "tree + wheels is $(mib "$total") MiB, over the $MAX_TREE_MIB MiB the device tool carries"
log "done: carry '$(realpath --relative-to="$REPO" "$DEST" 2>/dev/null || echo "$DEST")' to the GPU host and run bash tools/gpu_check.sh there"
