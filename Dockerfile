# syntax=docker/dockerfile:1
# ghostserve: multi-stage build on Debian bookworm.
#   docker build -t ghostserve .
#   docker run -p 50051:50051 -p 8000:8000 -p 9464:9464 ghostserve

FROM debian:bookworm AS build
WORKDIR /src
# The same install script as the README's commands and .ci/run.
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN scripts/install-deps.sh --build && rm -rf /var/lib/apt/lists/*
COPY . .
# Build, then list the Debian packages that own the shared libraries the
# binaries load: the runtime stage installs exactly those.
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DGHOSTSERVE_BUILD_TESTS=OFF \
 && cmake --build build -j"$(nproc)" --target ghostserve ghostserve-client ghostserve-model-bench \
 && mkdir -p /out/bin \
 && cp build/bin/ghostserve build/bin/ghostserve-client build/bin/ghostserve-model-bench /out/bin/ \
 && for lib in $(ldd /out/bin/* | awk '/=> \//{print $3}' | sort -u); do \
      dpkg -S "$lib" 2>/dev/null || dpkg -S "$(realpath "$lib")" 2>/dev/null || true; \
    done | sed 's/: .*//; s/, /\n/g' | sort -u > /out/runtime-packages.txt \
 && test -s /out/runtime-packages.txt

FROM debian:bookworm-slim AS runtime
COPY --from=build /out/runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      $(cat /tmp/runtime-packages.txt) libopenblas0-pthread \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin ghostserve \
 && mkdir -p /models /etc/ghostserve
COPY --from=build /out/bin/ /usr/local/bin/

# Weights (.pth or .safetensors) and model configs are mounted here, e.g.
#   -v $PWD/weights:/models:ro -e GHOSTSERVE_WEIGHTS=ghostnet_100=/models/ghostnet_1x.pth
#   -v $PWD/my-models:/models:ro -e GHOSTSERVE_MODEL_CONFIG=/models   (every *.json there)
# ghostnet_050_fashion is compiled into the binary and needs no files.
VOLUME ["/models"]
# Thread settings: the server sizes LibTorch's OpenMP team itself
# (--inference-threads, default: the CPUs the container may use, from its
# affinity mask) and keeps OpenBLAS single-threaded inside it. Do not set
# OMP_WAIT_POLICY=PASSIVE: sleeping OpenMP workers made GhostNet 3x slower at
# batch 1 on 2 CPUs (16 vs 5 ms).
ENV OPENBLAS_NUM_THREADS=1 \
    OPENCV_IO_MAX_IMAGE_PIXELS=40000000 \
    GHOSTSERVE_LISTEN=0.0.0.0:50051 \
    GHOSTSERVE_HTTP_LISTEN=0.0.0.0:8000 \
    GHOSTSERVE_METRICS_LISTEN=0.0.0.0:9464
# gRPC, HTTP (KServe v2 REST, classify, the try-it page), metrics.
EXPOSE 50051 8000 9464
USER 10001:10001
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["/usr/local/bin/ghostserve-client", "health", "--server", "127.0.0.1:50051", "--timeout-ms", "2000"]
ENTRYPOINT ["/usr/local/bin/ghostserve"]
