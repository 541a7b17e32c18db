# syntax=docker/dockerfile:1
# Multi-stage build: the build step is the same command CI runs
# (`cargo build --release --locked`); the runtime image is distroless and non-root.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/pollcast /usr/local/bin/pollcast
COPY config.toml /etc/pollcast/config.toml
# Inside a container the listener must accept traffic from outside the container.
ENV POLLCAST_SERVER_LISTEN=0.0.0.0:8080
EXPOSE 8080
USER nonroot:nonroot
# Exec form: pollcast is PID 1 and receives SIGTERM directly (graceful drain).
ENTRYPOINT ["/usr/local/bin/pollcast", "--config", "/etc/pollcast/config.toml"]
