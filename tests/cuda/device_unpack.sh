#!/usr/bin/env bash
# Unpacks the binaries tests/cuda/device_pack.sh made (PACK/bins.tar.xz) into BUILD/tests on the
# device machine, with Python's lzma (the machine may lack xz). Used by device_check.sh and
# device_session.sh:   tests/cuda/device_unpack.sh PACK BUILD
set -euo pipefail
pack=${1:?usage: device_unpack.sh PACK BUILD}
build=${2:?usage: device_unpack.sh PACK BUILD}
[[ -f $pack/bins.tar.xz ]] ||
  { echo "device_unpack.sh: no $pack/bins.tar.xz (run tests/cuda/device_pack.sh $pack on the development machine)" >&2; exit 2; }
mkdir -p "$build/tests"
python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)" \
  "$pack/bins.tar.xz" | tar xf - -C "$build/tests"
