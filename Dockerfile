# syntax=docker/dockerfile:1
# Quern's image: the three binaries, and nothing else, on distroless.
#
#   docker build -t quern:local .       (docker compose builds it for you)
#
# One image for every role; the command picks it:
#   quern-worker          the worker (consumes jobs, embeds, writes vectors)
#   quern                 the CLI (migrate, enqueue, status, search)
#   quern-fake-embedder   a deterministic OpenAI-compatible embedding server

# ---- build -------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
# The whole workspace (see .dockerignore for what is left out): Cargo.lock
# is committed and --locked holds the build to it.
COPY . .
# The cache mounts keep the registry and target/ between builds; binaries are
# copied out of target/ because a cache mount is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p quern-worker -p quern-cli -p quern-fake-embedder \
    && mkdir -p /out \
    && cp target/release/quern-worker target/release/quern target/release/quern-fake-embedder /out/

# ---- run ---------------------------------------------------------------------
# distroless/cc: glibc, libgcc, CA certificates and tzdata; no shell, no
# package manager. The :nonroot tag runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER nonroot:nonroot
# No ENTRYPOINT: docker-compose.yml (or `docker run quern:local <binary> ...`)
# says which binary to run. The default just shows the CLI's help.
CMD ["quern", "--help"]
