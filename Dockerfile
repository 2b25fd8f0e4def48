# Keel in a container, built from source: `docker build -t keel .`, or
# `docker-compose up --build` for the three-node cluster of
# docker-compose.yml. (scripts/docker-image builds the same image from a
# binary built on the host, for machines that cannot pull base images.)
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin keel

FROM debian:bookworm-slim
COPY --from=build /src/target/release/keel /usr/local/bin/keel
VOLUME /data
EXPOSE 9092 9093 9644
ENTRYPOINT ["/usr/local/bin/keel", "--data-dir", "/data"]
