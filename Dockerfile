# Two stages: build the release binary, then ship it on a slim base.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY lua ./lua
COPY benches ./benches
# The test harness is a workspace member: cargo needs its manifest to read the workspace.
COPY testkit ./testkit
RUN cargo build --release --locked --bin tollgate

FROM debian:bookworm-slim
# Root certificates for https:// alert webhooks and rediss:// (the system's roots).
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 tollgate
COPY --from=build /src/target/release/tollgate /usr/local/bin/tollgate
USER tollgate
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/tollgate"]
