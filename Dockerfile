# syntax=docker/dockerfile:1.7
# One Dockerfile, two images:
#   docker buildx build --target operator -t ghcr.io/modelship/modelship-operator:dev .
#   docker buildx build --target server   -t ghcr.io/modelship/modelship-server:dev .
# Both run as UID 65532 on distroless/cc (glibc, no shell, no package manager). The server is
# built with the same glibc allocator the benchmark measures.

ARG RUST_VERSION=1.95
ARG DISTROLESS=gcr.io/distroless/cc-debian12:nonroot

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
ENV CARGO_TERM_COLOR=never CARGO_INCREMENTAL=0
# Dependencies first: with only the manifests and empty crate roots this layer is rebuilt only
# when Cargo.toml or Cargo.lock change, not on every source edit.
COPY Cargo.toml Cargo.lock ./
COPY crds/Cargo.toml crds/
COPY operator/Cargo.toml operator/
COPY server/Cargo.toml server/
COPY tests/Cargo.toml tests/
RUN mkdir -p crds/src/bin operator/src server/src tests/src \
    && for c in crds operator server tests; do : > "$c/src/lib.rs"; done \
    && echo 'fn main() {}' > crds/src/bin/crdgen.rs \
    && echo 'fn main() {}' > operator/src/main.rs \
    && echo 'fn main() {}' > server/src/main.rs
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo build --release --locked -p modelship-operator -p modelship-server --bins
# Now the real sources; touch them so cargo rebuilds our crates over the empty roots.
COPY crds crds
COPY operator operator
COPY server server
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    find crds operator server -name '*.rs' -exec touch {} + \
    && cargo build --release --locked -p modelship-operator -p modelship-server --bins \
    && mkdir -p /out \
    && cp target/release/modelship-operator target/release/modelship-server /out/

FROM ${DISTROLESS} AS base
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.source="https://github.com/modelship/modelship" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.vendor="Modelship"
USER 65532:65532

FROM base AS server
LABEL org.opencontainers.image.title="modelship-server" \
      org.opencontainers.image.description="Modelship inference server: classic /predict, KServe V1 and Open Inference Protocol V2"
COPY --from=build /out/modelship-server /usr/local/bin/modelship-server
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/modelship-server"]

FROM base AS operator
LABEL org.opencontainers.image.title="modelship-operator" \
      org.opencontainers.image.description="Modelship operator: serves MLModel resources"
COPY --from=build /out/modelship-operator /usr/local/bin/modelship-operator
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/modelship-operator"]
