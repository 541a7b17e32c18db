# syntax=docker/dockerfile:1
# pollcast container image.
#
# Build stage: the same command CI's release build runs (`cargo build
# --release --locked`, .ci/run; tests/packaging.rs holds the two equal), with
# BuildKit caches for the crate registry and the target directory.
# Runtime stage: distroless (glibc, CA certificates, no shell, no package
# manager), non-root, the shipped config.toml as the default config.
#
#   docker build -t pollcast \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#   docker run -p 8080:8080 -e POLLCAST_UPSTREAM_URL=http://api:3000 pollcast
#
# Base images are pinned by tag and digest: a rebuild gets the bytes that were
# reviewed (the digest decides; a tag moved since changes nothing).
# Update both together (`docker buildx imagetools inspect <image>:<tag>`).

FROM rust:1.95.0-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -D -m 0755 target/release/pollcast /out/pollcast

FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
# Passed by the release build (--build-arg); the defaults mark a local build.
# SOURCE is the repository's URL: none is recorded in the repository itself.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="pollcast" \
      org.opencontainers.image.description="Reverse-proxy sidecar that turns polling of REST list endpoints into Server-Sent Events" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
COPY --from=build /out/pollcast /usr/local/bin/pollcast
COPY config.toml /etc/pollcast/config.toml
# The config file (and so the defaults of --healthcheck) for every command.
# Inside a container the listeners must accept traffic from outside it:
# clients and pass-through on 8080; /healthz, /readyz, /metrics and the status
# page on 9090, so they stay out of a Service that only targets 8080.
ENV POLLCAST_CONFIG=/etc/pollcast/config.toml \
    POLLCAST_SERVER_LISTEN=0.0.0.0:8080 \
    POLLCAST_ADMIN_LISTEN=0.0.0.0:9090
EXPOSE 8080 9090
# Numeric, so Kubernetes' runAsNonRoot can verify it (distroless "nonroot").
USER 65532:65532
# The binary probes its own /healthz: no shell or curl in the image.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/pollcast", "--healthcheck"]
STOPSIGNAL SIGTERM
# Exec form, no shell wrapper: pollcast is PID 1 and gets SIGTERM itself
# (graceful drain). Arguments after the image name go to pollcast.
ENTRYPOINT ["/usr/local/bin/pollcast"]
