# The agency binary for docker-compose: coordinator, workers and clients from one image.
FROM rust:1-bookworm AS build
WORKDIR /src
# rdkafka builds librdkafka from source: it needs a C toolchain (cmake is not required) and
# OpenSSL's headers for TLS and SASL.
RUN apt-get update && apt-get install -y --no-install-recommends build-essential python3 libssl-dev pkg-config && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked -p agency

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 python3 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/agency /usr/local/bin/agency
COPY examples /examples
WORKDIR /
ENTRYPOINT ["agency"]
