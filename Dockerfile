# Build binferry in a Rust image and ship the binary in a slim Debian image.
FROM rust:1.85-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/binferry /usr/local/bin/binferry
ENTRYPOINT ["binferry"]
