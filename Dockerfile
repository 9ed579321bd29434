# kubetrail operator image: a static-enough Rust binary on a distroless, non-root base.
# Build: docker build -t kubetrail:dev .
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock rust-toolchain.toml ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
    && cargo build --release --locked || true
COPY src ./src
COPY examples ./examples
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin kubetrail \
    && strip target/release/kubetrail

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/kubetrail /usr/local/bin/kubetrail
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/kubetrail"]
CMD ["operator"]
