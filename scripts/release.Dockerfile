# syntax=docker/dockerfile:1
#
# Builds the release tarball in a container, so that it can be built from
# macOS or from any Linux with Docker. scripts/release.sh --docker runs, from
# the repository root:
#
#   docker build --platform linux/amd64 \
#     --build-arg SOURCE_DATE_EPOCH="$(git log -1 --format=%ct)" \
#     -f scripts/release.Dockerfile --output type=local,dest=dist .
#
# which leaves in dist/ only the tarball and its .sha256. The builder stage
# runs scripts/release.sh itself, so the tarball is the one a native build of
# the same commit gives with the same Rust toolchain and the same (Debian
# bookworm) static glibc.

# The Rust release the binary is built with; change it here, in one place.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder

# The artifact is an x86_64 Linux binary; on Apple silicon, Docker builds it
# under amd64 emulation. Another platform would give a binary Nomad cannot run.
ARG TARGETPLATFORM
ARG TARGETARCH
RUN if [ "$TARGETARCH" != "amd64" ]; then \
      echo "release.Dockerfile: the release binary is x86_64; build with --platform linux/amd64 (not $TARGETPLATFORM)" >&2; \
      exit 1; \
    fi

# release.sh checks with `file` that the binary is static. The full (not
# -slim) image has it; install it only if a future image drops it.
RUN command -v file >/dev/null || { \
      apt-get update && \
      apt-get install -y --no-install-recommends file && \
      rm -rf /var/lib/apt/lists/*; \
    }

WORKDIR /build
COPY . .

# The commit time fixes the tarball's timestamps (the context has no .git to
# read it from); without it the tarball would change with every build.
ARG SOURCE_DATE_EPOCH
RUN if [ -z "$SOURCE_DATE_EPOCH" ]; then \
      echo 'release.Dockerfile: pass --build-arg SOURCE_DATE_EPOCH="$(git log -1 --format=%ct)" (scripts/release.sh --docker does)' >&2; \
      exit 1; \
    fi

# Cache mounts keep downloaded crates and compiled dependencies between
# builds; they are not part of any layer, so release.sh writes the tarball
# to /out, outside them. sharing=locked: two concurrent builds would
# otherwise write the same target directory. The sources are touched first
# because cargo decides what to rebuild by mtime, and the copied files keep
# the host's (possibly older than the cached build): the crate itself is
# always rebuilt, its dependencies come from the cache.
RUN --mount=type=cache,id=e2b-webhook-emitter-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=e2b-webhook-emitter-cargo-git,target=/usr/local/cargo/git \
    --mount=type=cache,id=e2b-webhook-emitter-target-amd64,target=/build/target,sharing=locked \
    find . -path ./target -prune -o -type f -exec touch {} + && \
    scripts/release.sh --out /out

# Only the tarball and its checksum are exported (--output type=local).
FROM scratch
COPY --from=builder /out/*.tar.gz /out/*.sha256 /
