#!/usr/bin/env bash
# Installs the Debian packages lamina needs (only those missing), then configures and builds
# Release into build/ (or $LAMINA_BUILD_DIR). Extra arguments go to cmake's configure step,
# e.g. ./launch/setup.sh -DLAMINA_CUDA=OFF or -DLAMINA_CUDA_ARCH=80.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build_dir=${LAMINA_BUILD_DIR:-build}

packages=(cmake ninja-build g++ pkg-config libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev libopenblas-dev
          libutf8proc-dev nlohmann-json3-dev libopenmpi-dev openmpi-bin liblzma-dev zlib1g-dev xz-utils)
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_install() {
  echo "setup: installing $*" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  apt_install "${missing[@]}"
fi

# The claim experiments (launch/experiments) draw their plots with matplotlib: from PyPI, else
# Debian's package (pip refuses a Python that Debian manages, and may be missing).
if ! python3 -c "import matplotlib" >/dev/null 2>&1; then
  echo "setup: installing matplotlib" >&2
  python3 -m pip install --quiet matplotlib || apt_install python3-matplotlib
fi

# nvcc lives outside PATH on a stock CUDA install.
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi

cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$build_dir" -j "$(nproc)"
echo "setup: built $build_dir/lamina" >&2
