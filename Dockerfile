# syntax=docker/dockerfile:1
# The Muster hub as a container image (the same binary runs agents in env-file
# mode, see deploy/compose/). Build from the repository root:
#     docker build -t muster:local .
#     docker run -p 8443:8443 -v muster-data:/var/lib/muster muster:local
# Not built on the machine this was written on (no container engine there); see
# docs/PACKAGING.md.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the build between image builds; the binary
# is copied out because the target dir is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p muster \
 && cp target/release/muster /usr/local/bin/muster

FROM debian:bookworm-slim
# ca-certificates: outbound HTTPS to public services (an OIDC provider, say);
# hub and agents trust each other through the hub's own CA.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/muster \
        --shell /usr/sbin/nologin muster \
 && install -d -o muster -g muster -m 0700 /var/lib/muster
COPY --from=build /usr/local/bin/muster /usr/local/bin/muster
USER muster
# The hub's CA key and database: keep them on a volume, back them up.
VOLUME /var/lib/muster
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/muster"]
CMD ["hub", "--data-dir", "/var/lib/muster", "--listen", "0.0.0.0:8443"]
