# syntax=docker/dockerfile:1
# Tuneforge images. Two targets, each built only after its tests pass in a
# stage of its own (the final stage copies a file that only a passing test
# run writes, so BuildKit cannot skip the tests):
#
#   docker build --target cpu  -t tuneforge/tuneforge:0.1.0-cpu .
#   docker build --target cuda -t tuneforge/tuneforge:0.1.0-cuda .
#
# cpu:  Debian 12, built with the project's own install script; the scheduler,
#       the worker, the CLI and tuneforge-train on Debian's libtorch 1.13 (CPU).
# cuda: an NVIDIA CUDA runtime base (Ubuntu 24.04, whose gRPC, protobuf and
#       Abseil are the same releases as Debian 12's) with PyTorch 2.7's CUDA
#       build of libtorch; the worker and tuneforge-train, for GPU nodes.
#
# Both final images hold the binaries and the shared libraries they load,
# run as user 10001 with no shell needed, and keep nothing on the root
# filesystem: the scheduler writes under /data, the worker under /cache, and
# temporary files go to /tmp (mount volumes there; the root can be read-only).
# Bases are pinned to dated releases; update them deliberately.

ARG DEBIAN_BASE=debian:bookworm-20241111-slim
ARG CUDA_DEVEL_BASE=nvidia/cuda:12.6.3-cudnn-devel-ubuntu24.04
ARG CUDA_RUNTIME_BASE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04
ARG TORCH_VERSION=2.7.1
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu126

# ---------------------------------------------------------------- cpu ----
FROM ${DEBIAN_BASE} AS cpu-build
WORKDIR /src
COPY scripts/install-deps.sh scripts/
RUN ./scripts/install-deps.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN rm -rf build* && make build BUILD_TYPE=Release
# The Debian packages that own the shared libraries the binaries load: the
# runtime stage installs these and nothing else.
RUN ./scripts/runtime-packages.sh build/bin/tuneforge-server build/bin/tuneforge-worker \
      build/bin/tuneforge build/bin/tuneforge-train > /runtime-packages.txt

FROM cpu-build AS cpu-test
# The whole suite, as `make test` runs it (it installs its npm test oracles).
RUN make test && touch /tests-passed

FROM ${DEBIAN_BASE} AS cpu
COPY --from=cpu-build /runtime-packages.txt /tmp/runtime-packages.txt
COPY scripts/image-runtime.sh /tmp/image-runtime.sh
RUN /tmp/image-runtime.sh /tmp/runtime-packages.txt /data /cache && rm /tmp/image-runtime.sh
COPY --from=cpu-test /tests-passed /usr/share/tuneforge/tests-passed
COPY --from=cpu-build /src/build/bin/tuneforge-server /src/build/bin/tuneforge-worker \
     /src/build/bin/tuneforge /src/build/bin/tuneforge-train /usr/local/bin/
ENV TMPDIR=/tmp
USER 10001:10001
WORKDIR /data
EXPOSE 50051 8081 9090
ENTRYPOINT ["/usr/local/bin/tuneforge-server"]
CMD ["--config=/etc/tuneforge/server.toml"]

# --------------------------------------------------------------- cuda ----
FROM ${CUDA_DEVEL_BASE} AS cuda-build
ARG TORCH_VERSION
ARG TORCH_INDEX
WORKDIR /src
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      build-essential cmake ninja-build pkg-config git python3 python3-venv \
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev \
      libspdlog-dev libfmt-dev nlohmann-json3-dev libsqlite3-dev libcli11-dev libsimdjson-dev \
      libpcre2-dev libssl-dev libgtest-dev libgmock-dev \
 && rm -rf /var/lib/apt/lists/*
# PyTorch's wheel carries libtorch and its CMake package; 2.7 and later are
# built with the C++11 ABI, as are the system's gRPC and Abseil.
RUN python3 -m venv /opt/torch \
 && /opt/torch/bin/pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
COPY . .
RUN rm -rf build* \
 && cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$(/opt/torch/bin/python -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
 && cmake --build build --target tuneforge-worker tuneforge-train engine_test bpe_tokenizer_test
RUN mkdir -p /out/lib \
 && cp -a /opt/torch/lib/python3*/site-packages/torch/lib/*.so* /out/lib/ \
 && ./scripts/runtime-packages.sh build/bin/tuneforge-worker build/bin/tuneforge-train \
      > /runtime-packages.txt

FROM cuda-build AS cuda-test
# The engine's tests on the CPU (no GPU while images build): the same code
# compiled against libtorch 2.x, its Python references run by the same
# PyTorch. GPU runs are measured on GPU hosts.
RUN PATH=/opt/torch/bin:$PATH build/bin/engine_test && build/bin/bpe_tokenizer_test \
 && touch /tests-passed

FROM ${CUDA_RUNTIME_BASE} AS cuda
COPY --from=cuda-build /runtime-packages.txt /tmp/runtime-packages.txt
COPY scripts/image-runtime.sh /tmp/image-runtime.sh
RUN /tmp/image-runtime.sh /tmp/runtime-packages.txt /cache && rm /tmp/image-runtime.sh
COPY --from=cuda-test /tests-passed /usr/share/tuneforge/tests-passed
COPY --from=cuda-build /out/lib/ /opt/tuneforge/lib/
COPY --from=cuda-build /src/build/bin/tuneforge-worker /src/build/bin/tuneforge-train \
     /usr/local/bin/
ENV LD_LIBRARY_PATH=/opt/tuneforge/lib TMPDIR=/tmp
USER 10001:10001
WORKDIR /cache
EXPOSE 8081 9090
ENTRYPOINT ["/usr/local/bin/tuneforge-worker"]
CMD ["--config=/etc/tuneforge/worker.toml"]
