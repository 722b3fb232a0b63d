# cloud-backup: restic + rclone + oidc-agent, with the cloud-backup orchestrator as entry point.
#
# Build: compiles in the official Swift image, from a fresh checkout, with any builder:
#     docker build -t cloud-backup .          (BuildKit or the legacy builder)
#     docker compose build                    (Compose v2)
#     docker-compose build                    (Compose 1.29, Debian 12's; it uses the legacy builder)
# Every stage here is needed by the image, so a builder that builds every stage (the legacy one) builds
# nothing more. Where the Swift image cannot be pulled, docker/Dockerfile.prebuilt builds the same image
# from a binary built on the host; its runtime stage is this one, line for line (Tests/Container checks).

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

# --- Runtime: everything but the binary (the same lines in docker/Dockerfile.prebuilt). ---
FROM ${RUNTIME_IMAGE} AS runtime
# What the static-stdlib binary links dynamically (readelf -d: NEEDED): libcurl.so.4 (libcurl4t64; the
# OpenSSL flavour, as on the build machine), libstdc++, libgcc_s, libm and libc (the last three are in
# every Debian image). ca-certificates is the system's CA store that URLSession (libcurl), rclone, restic
# and oidc-agent trust; CLOUD_BACKUP_CA_FILE adds a private CA to it. procps (ps, kill, pgrep) is for
# support; libcap2-bin sets the capability below (and getcap/getpcaps show it).
RUN export DEBIAN_FRONTEND=noninteractive \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        restic rclone oidc-agent-cli ca-certificates tini libcurl4t64 libstdc++6 procps libcap2-bin \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old /var/log/apt/* /var/log/dpkg.log

# The user's home is the persistent volume: oidc-agent accounts (~/.config/oidc-agent), rclone.conf
# (~/.config/rclone), restic's cache (~/.cache/restic) and the tool's state and default local
# repository (~/.local/state/cloud-backup). A new named volume starts as a copy of this skeleton.
RUN useradd --uid 1000 --user-group --create-home --home-dir /home/user --shell /bin/bash user \
    && install -d -o user -g user -m 0700 /home/user/.config /home/user/.config/rclone \
        /home/user/.config/oidc-agent /home/user/.cache /home/user/.local /home/user/.local/state \
    && install -d -m 0755 /backup

# Backups read every file they are given while the container stays non-root: a second restic with the
# file capability cap_dac_read_search (read any file, list any directory; nothing else), which only
# `user` may run. The kernel starts it only when the container has that capability (compose:
# `cap_add: [DAC_READ_SEARCH]`, docker/podman run: `--cap-add DAC_READ_SEARCH`); cloud-backup uses it
# then, and the plain /usr/bin/restic otherwise (docs/design.md, "Reading every file").
RUN install -d -m 0755 /usr/local/libexec/cloud-backup \
    && install -o root -g user -m 0750 /usr/bin/restic /usr/local/libexec/cloud-backup/restic \
    && setcap cap_dac_read_search=ep /usr/local/libexec/cloud-backup/restic

COPY docker/cloud-backup-entrypoint /usr/local/bin/cloud-backup-entrypoint

VOLUME ["/home/user"]
WORKDIR /backup
# What the built-in schedule's backup saves (BACKUP_SCHEDULE): everything mounted under /backup.
ENV BACKUP_PATHS=/backup
USER user
# The REST server's default port; it listens on 127.0.0.1 unless RESTIC_REST_USERNAME/PASSWORD are set.
EXPOSE 8080
# Healthy about 10 s after the start (the first probe comes one interval after the start; Docker 20.10
# has no --start-interval); failures within the start period do not count.
HEALTHCHECK --interval=10s --timeout=10s --start-period=60s --retries=3 CMD ["cloud-backup", "server-status"]
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/cloud-backup-entrypoint"]
CMD ["start-server"]
# --- end of the runtime stage shared with docker/Dockerfile.prebuilt ---

# The binary compiled above.
COPY --from=build /out/cloud-backup /usr/local/bin/cloud-backup
