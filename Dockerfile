# cloud-backup: restic + rclone + oidc-agent, with the cloud-backup orchestrator as entry point.
#
# Build (default target `runtime`, compiles in the official Swift image):
#     docker build -t cloud-backup .
# Build where the Swift image cannot be pulled, from a binary built on the host (which needs libcurl's
# development files for the link: Debian/Ubuntu `apt-get install libcurl4-openssl-dev`):
#     swift build -c release -Xswiftc -static-stdlib --scratch-path .build-release
#     install -D -m 0755 .build-release/release/cloud-backup .build-release/container/cloud-backup
#     strip .build-release/container/cloud-backup
#     podman build --format docker --target prebuilt -t cloud-backup .
# (`--format docker` for podman/buildah: the OCI format has no HEALTHCHECK. BuildKit and buildah skip
# the stages a target does not need, so the prebuilt target never touches the Swift image; Docker's
# legacy builder, which builds every stage, is not supported.)

ARG SWIFT_IMAGE=swift:6.3-bookworm
ARG RUNTIME_IMAGE=debian:trixie-slim

# --- Compile: a release binary with the Swift runtime linked in (-static-stdlib). ---
# FoundationNetworking (URLSession: Healthchecks pings, STS) is linked in too, and it is libcurl on
# Linux: the link needs libcurl's development files (-lcurl), the binary then libcurl.so.4 at run time.
FROM ${SWIFT_IMAGE} AS build
RUN export DEBIAN_FRONTEND=noninteractive \
    && if ! dpkg-query -W -f='${Status}' libcurl4-openssl-dev 2>/dev/null | grep -q "install ok installed"; then \
        apt-get update && apt-get install -y --no-install-recommends libcurl4-openssl-dev && rm -rf /var/lib/apt/lists/*; fi
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release -Xswiftc -static-stdlib --product cloud-backup \
    && install -D -m 0755 "$(swift build -c release -Xswiftc -static-stdlib --show-bin-path)/cloud-backup" /out/cloud-backup \
    && strip /out/cloud-backup

# --- Runtime: everything but the binary. ---
FROM ${RUNTIME_IMAGE} AS runtime-base
# What the static-stdlib binary links dynamically (readelf -d: NEEDED): libcurl.so.4 (libcurl4t64; the
# OpenSSL flavour, as on the build machine), libstdc++, libgcc_s, libm and libc (the last three are in
# every Debian image). ca-certificates is the system's CA store that URLSession (libcurl), rclone, restic
# and oidc-agent trust; CLOUD_BACKUP_CA_FILE adds a private CA to it.
RUN export DEBIAN_FRONTEND=noninteractive \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        restic rclone oidc-agent-cli ca-certificates tini libcurl4t64 libstdc++6 \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old /var/log/apt/* /var/log/dpkg.log

# The user's home is the persistent volume: oidc-agent accounts (~/.config/oidc-agent), rclone.conf
# (~/.config/rclone), restic's cache (~/.cache/restic) and the tool's state and default local
# repository (~/.local/state/cloud-backup). A new named volume starts as a copy of this skeleton.
RUN useradd --uid 1000 --user-group --create-home --home-dir /home/user --shell /bin/bash user \
    && install -d -o user -g user -m 0700 /home/user/.config /home/user/.config/rclone \
        /home/user/.config/oidc-agent /home/user/.cache /home/user/.local /home/user/.local/state \
    && install -d -m 0755 /backup

COPY docker/cloud-backup-entrypoint /usr/local/bin/cloud-backup-entrypoint

VOLUME ["/home/user"]
WORKDIR /backup
USER user
# The REST server's default port; it listens on 127.0.0.1 unless RESTIC_REST_USERNAME/PASSWORD are set.
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 CMD ["cloud-backup", "server-status"]
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/cloud-backup-entrypoint"]
CMD ["start-server"]

# --- Target `prebuilt`: the binary built on the host (see the top of this file). ---
FROM runtime-base AS prebuilt
ARG PREBUILT_BINARY=.build-release/container/cloud-backup
COPY ${PREBUILT_BINARY} /usr/local/bin/cloud-backup

# --- Default target: the binary compiled above. ---
FROM runtime-base AS runtime
COPY --from=build /out/cloud-backup /usr/local/bin/cloud-backup
