# evrelay's image: a static-enough binary on distroless, non-root, nothing else.
#   docker build -t ghcr.io/evrelay/evrelay:0.1.0 .
# Stage 1 builds with the Rust toolchain the crate asks for (rust-version 1.89+);
# stage 2 holds the binary, CA certificates and libc only (distroless/cc).

FROM rust:1.89-bookworm AS build
WORKDIR /src
# Dependencies first, so a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && for b in journal pipeline; do echo 'fn main() {}' > benches/$b.rs; done \
    && cargo build --release --locked \
    && rm -rf src benches
COPY src ./src
COPY migrations ./migrations
COPY benches ./benches
RUN touch src/main.rs src/lib.rs && cargo build --release --locked \
    && strip target/release/evrelay

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/evrelay /usr/local/bin/evrelay
# 65532 is distroless's nonroot user; the StatefulSet runs it with a read-only root
# and the journal on its PVC at /var/lib/evrelay.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/evrelay"]
CMD ["run"]
