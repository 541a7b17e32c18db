# syntax=docker/dockerfile:1
# pollcast container image.
#
# Build stage: the same command CI runs (`cargo build --release --locked`), with
# BuildKit caches for the crate registry and the target directory.
# Runtime stage: distroless (glibc, CA certificates, no shell, no package
# manager), non-root, the shipped config.toml as the default config.
#
#   docker build -t pollcast .
#   docker run -p 8080:8080 -e POLLCAST_UPSTREAM_URL=http://api:3000 pollcast

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -D -m 0755 target/release/pollcast /out/pollcast

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="pollcast" \
      org.opencontainers.image.description="Reverse-proxy sidecar that turns polling of REST list endpoints into Server-Sent Events" \
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
