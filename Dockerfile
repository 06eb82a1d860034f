# evrelay's image: the binary on distroless, non-root, nothing else.
#   docker build -t ghcr.io/evrelay/evrelay:0.1.0 .
# Stage 1 builds with the Rust toolchain the crate asks for (rust-version 1.89+);
# stage 2 holds the stripped binary, CA certificates and libc only (distroless/cc).
# tests/dockerfile.rs builds exactly what the COPY lines copy, so a file Cargo needs
# and the image lacks fails the test suite, not the release.

FROM rust:1.89-bookworm AS build
WORKDIR /src
# Dependencies first, so a source change does not rebuild them. sled is vendored
# (Cargo.toml patches it to vendor/sled), so vendor/ is a dependency too.
COPY Cargo.toml Cargo.lock ./
COPY vendor ./vendor
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
