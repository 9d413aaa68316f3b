# The mesh's programs in one image: `waypoint`, `ztunnel`, `waypoint-controller`, `mesh` (CLI)
# and `loadtest` (echo server, fortio-compatible load). The charts pick the program with
# `command`. Build: `docker build -t <registry>/mesh:0.1.0 .`
FROM rust:1.95-bookworm AS build
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --locked --release -p mesh -p loadtest --bins \
 && mkdir /out \
 && cp target/release/waypoint target/release/ztunnel target/release/waypoint-controller \
       target/release/mesh target/release/loadtest /out/

FROM debian:bookworm-slim
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
# Istio's proxy user; the ztunnel chart runs as root for its capabilities.
USER 1337:1337
