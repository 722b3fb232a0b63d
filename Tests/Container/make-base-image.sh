#!/bin/bash
# Makes the Dockerfiles' runtime base image locally: no image registry is reachable here, only Debian's
# package mirror. debootstrap --variant=minbase trixie, trimmed like the official slim image, imported
# (`docker import`) under the exact name the Dockerfiles use, so the build uses it instead of pulling.
#
# Usage: make-base-image.sh [IMAGE_NAME]      (default debian:trixie-slim)
# Env:   DOCKER                    the docker client (default /usr/bin/docker; DOCKER_HOST names the engine)
#        CLOUD_BACKUP_TEST_CACHE   where the rootfs tarball is cached (default /var/cache/cloud-backup-tests)
#        DEBIAN_MIRROR             (default http://deb.debian.org/debian)
#
# The tarball is cached, keyed by the ISO week and a hash of what makes it (build_rootfs, the suite and
# the mirror); a missing or unreadable cache is rebuilt, so the cache only saves time and is never needed.
set -euo pipefail

image="${1:-debian:trixie-slim}"
docker="${DOCKER:-/usr/bin/docker}"
cache_dir="${CLOUD_BACKUP_TEST_CACHE:-/var/cache/cloud-backup-tests}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite=trixie

log() { printf 'make-base-image: %s\n' "$*" >&2; }

build_rootfs() {
    local work
    work="$(mktemp -d /var/tmp/cloud-backup-rootfs.XXXXXX)"
    trap 'rm -rf "$work"' RETURN
    local rootfs="$work/rootfs"
    log "debootstrap --variant=minbase ${suite} from ${mirror} (about 30 s)"
    if ! debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
        tail -n 30 "$work/debootstrap.log" >&2
        log "debootstrap failed"
        return 1
    fi

    # What the official slim image does: no docs, man pages or translations, no apt caches.
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
    cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    printf 'Acquire::Languages "none";\n' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
    rm -f "$rootfs/etc/apt/sources.list"
    cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: ${mirror}
Suites: ${suite} ${suite}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: ${suite}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$rootfs"/usr/share/{man,groff,info,lintian,linda}/* "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log \
        "$rootfs"/var/log/apt/* "$rootfs"/tmp/* "$rootfs"/root/.cache
    find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    : >"$rootfs/etc/machine-id"

    mkdir -p "$cache_dir"
    tar --numeric-owner --xattrs -C "$rootfs" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    # Older keys are of no use any more.
    find "$cache_dir" -maxdepth 1 -name "rootfs-${suite}-minbase-*.tar" -not -name "$(basename "$tarball")" -delete
    log "cached $(du -h "$tarball" | cut -f1) rootfs at $tarball"
}

inputs_hash="$( { declare -f build_rootfs; echo "$suite $mirror"; } | sha256sum | cut -c1-12)"
tarball="${cache_dir}/rootfs-${suite}-minbase-$(date -u +%G-W%V)-${inputs_hash}.tar"

if [[ -s "$tarball" ]] && tar -tf "$tarball" ./etc/os-release >/dev/null 2>&1; then
    log "using the cached rootfs $tarball"
else
    rm -f "$tarball"
    build_rootfs
fi

log "importing it as $image"
"$docker" import --change 'CMD ["bash"]' "$tarball" "$image" >/dev/null
"$docker" image inspect --format '{{.Id}}' "$image" >/dev/null
log "done: $image"
