#!/bin/sh
# Installs everything ghostserve needs from Debian bookworm's archive.
# The single source of dependencies: the README's commands, .ci/run and the
# Dockerfile's build stage all call this script.
#
#   scripts/install-deps.sh          build + runtime + test dependencies
#   scripts/install-deps.sh --build  build + runtime only (Docker build stage)
#   scripts/install-deps.sh --sanitizers
#                                    build + test dependencies plus clang and
#                                    its sanitizer/libFuzzer runtimes (make
#                                    fuzz / asan / tsan); not in the default
#                                    install, which never needs them
#   scripts/install-deps.sh --bench  build + test dependencies plus Node.js,
#                                    npm and python3-onnx for make bench's
#                                    ONNX Runtime comparison (bench/ort)
#
# Idempotent: when every package is already installed it returns without
# touching apt.
set -eu

BUILD_PACKAGES="
  build-essential cmake pkg-config ca-certificates
  libtorch-dev libdnnl-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libopencv-dev libdeflate-dev
  prometheus-cpp-dev
  libabsl-dev
  libgtest-dev googletest libgmock-dev
  libopenblas0-pthread
  nlohmann-json3-dev zlib1g-dev
  libcli11-dev
  libboost-dev libssl-dev
"
# Test-only: the independent PyTorch reference model and its benchmark; a
# real Prometheus, gRPC for Python and YAML for the deploy tests (tests/deploy);
# the openssl CLI makes throwaway certificates for tests/integration/security_test;
# a headless Chromium driven by Selenium for the try-it page (tests/http/test_page.py).
TEST_PACKAGES="
  python3 python3-torch python3-numpy
  dataset-fashion-mnist
  prometheus python3-grpcio python3-grpc-tools python3-yaml
  openssl curl
  chromium chromium-driver python3-selenium
"

# Hardening only: clang for the libFuzzer target (GCC has no libFuzzer) and
# the compiler-rt runtimes; python3-pil regenerates the fuzz seed corpus.
SANITIZER_PACKAGES="
  clang-14 libclang-rt-14-dev python3-pil
"

# Benchmark only: Node.js + npm run onnxruntime-node (installed from npm by
# scripts/bench_ort.py into bench/ort/node_modules); python3-onnx lets
# torch.onnx.export write the model; python3-pil re-encodes the photographs
# as PNG for scripts/bench_service.py.
BENCH_PACKAGES="
  nodejs npm python3-onnx python3-pil
"

packages="$BUILD_PACKAGES"
case "${1:-}" in
  --build) ;;
  --sanitizers) packages="$packages $TEST_PACKAGES $SANITIZER_PACKAGES" ;;
  --bench) packages="$packages $TEST_PACKAGES $BENCH_PACKAGES" ;;
  *) packages="$packages $TEST_PACKAGES" ;;
esac

missing=""
for p in $packages; do
  # A Node.js build that bundles npm (e.g. NodeSource's nodejs, which
  # conflicts with Debian's npm package) already provides it.
  if [ "$p" = npm ] && command -v npm >/dev/null 2>&1; then continue; fi
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done

if [ -z "$missing" ]; then
  echo "install-deps: all packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

echo "install-deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing

# Debian's LibTorch calls BLAS through the alternatives system; make sure the
# OpenMP/pthread OpenBLAS is the one selected, not the reference BLAS.
for alt in libblas.so.3-x86_64-linux-gnu liblapack.so.3-x86_64-linux-gnu; do
  path=$(update-alternatives --list "$alt" 2>/dev/null | grep openblas-pthread | head -n1 || true)
  if [ -n "$path" ]; then $SUDO update-alternatives --set "$alt" "$path" >/dev/null; fi
done
echo "install-deps: done"
