# syntax=docker/dockerfile:1
#
# The shadowsync operator image: a statically linked musl binary on a distroless
# "static" base (CA certificates, /etc/passwd with nonroot 65532, no shell, no libc).
#
#   docker build -t shadowsync:dev .
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/shadowsync:TAG --push .
#
# Each platform is built natively (under emulation on a foreign host), so no cross
# toolchain is involved.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-alpine AS build
# C toolchain for aws-lc-sys (TLS crypto of the AWS SDK); cmake and perl are its
# fallback build path.
RUN apk add --no-cache build-base cmake perl
WORKDIR /src
# musl targets link statically by default; say so explicitly so that a change of
# default cannot produce a binary that needs a loader the final image lacks.
ENV RUSTFLAGS="-C target-feature=+crt-static" \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_PROFILE_RELEASE_LTO=thin \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=4
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The declared benchmark must be present for Cargo to load the manifest; only the
# shadowsync binary is built.
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin shadowsync \
 && install -D -m 0755 target/release/shadowsync /out/shadowsync

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="shadowsync" \
      org.opencontainers.image.description="Kubernetes operator for AWS IoT device shadows and retained MQTT messages" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/shadowsync /usr/local/bin/shadowsync
# Numeric, so that Kubernetes can verify runAsNonRoot without a passwd lookup.
USER 65532:65532
# Exec form: there is no shell in this image. Runs only if the binary is static.
RUN ["/usr/local/bin/shadowsync", "--version"]
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/shadowsync"]
CMD ["run"]
