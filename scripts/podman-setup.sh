#!/usr/bin/env bash
# Prepare a Debian host to run PAGI's compose stack with rootful podman:
#   1. the podman packages (apt), podman-compose (pip, into a tools venv),
#   2. a local Debian base image standing in for python:3.11-slim, since no
#      image registry may be reachable (built with debootstrap + podman import).
# Idempotent: every step is skipped when already done, so a warm run takes
# about a second.
#
# Environment:
#   PAGI_BASE_IMAGE    name of the local base image (default localhost/pagi-base:bookworm)
#   PAGI_TOOLS_VENV    venv that gets podman-compose (default .venv of the repository)
#   CONTAINERS_CONF    podman configuration (default deploy/podman/containers.conf)
#   DEBIAN_MIRROR      mirror for debootstrap (default: the one apt already uses)
# Exit status: 0 when ready, 1 on failure, 3 when podman cannot be installed
# (compose-smoke.sh turns 3 into a loud skip).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BASE_IMAGE="${PAGI_BASE_IMAGE:-localhost/pagi-base:bookworm}"
TOOLS_VENV="${PAGI_TOOLS_VENV:-$ROOT/.venv}"
PODMAN_COMPOSE_VERSION="1.6.0"
SUITE="bookworm"  # Debian's Python 3.11, the version PAGI requires
export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/deploy/podman/containers.conf}"

log() { printf 'podman-setup: %s\n' "$*" >&2; }

install_packages() {
    local wanted=(podman runc netavark aardvark-dns iptables debootstrap catatonit)
    local missing=()
    local pkg
    for pkg in "${wanted[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        log "apt-get not found; cannot install ${missing[*]}"
        return 3
    fi
    if [ "$(id -u)" -ne 0 ]; then
        log "must run as root to install ${missing[*]} (rootful podman)"
        return 3
    fi
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get update -qq || ! apt-get install -y -qq "${missing[@]}" >/dev/null; then
        log "apt-get could not install ${missing[*]}"
        return 3
    fi
}

install_podman_compose() {
    if [ -x "$TOOLS_VENV/bin/podman-compose" ]; then
        return 0
    fi
    if [ ! -x "$TOOLS_VENV/bin/python" ]; then
        log "creating tools venv $TOOLS_VENV"
        python3 -m venv "$TOOLS_VENV"
    fi
    log "installing podman-compose $PODMAN_COMPOSE_VERSION into $TOOLS_VENV"
    "$TOOLS_VENV/bin/python" -m pip install -q "podman-compose==$PODMAN_COMPOSE_VERSION"
}

debian_mirror() {
    if [ -n "${DEBIAN_MIRROR:-}" ]; then
        echo "$DEBIAN_MIRROR"
        return
    fi
    local uri=""
    if [ -r /etc/apt/sources.list.d/debian.sources ]; then
        uri="$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
    fi
    if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
        uri="$(awk '/^deb / && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list)"
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

build_base_image() {
    if podman image exists "$BASE_IMAGE"; then
        return 0
    fi
    local rootfs mirror
    rootfs="$(mktemp -d /var/tmp/pagi-rootfs.XXXXXX)"
    # shellcheck disable=SC2064  # expand now: the path is fixed
    trap "rm -rf '$rootfs'" RETURN
    mirror="$(debian_mirror)"
    log "building base image $BASE_IMAGE from $SUITE ($mirror)"
    debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,ca-certificates,libseccomp2 \
        "$SUITE" "$rootfs" "$mirror" >/dev/null
    # Hosts behind a TLS-inspecting proxy add their CA here; pip inside image
    # builds needs it too. The Dockerfile stays generic because the base has it.
    if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
        mkdir -p "$rootfs/usr/local/share/ca-certificates"
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
        chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
    fi
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import \
        --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' \
        - "$BASE_IMAGE" >/dev/null
    # Lets `FROM python:3.11-slim` (the Dockerfile's default) build unchanged
    # here, unless a real image of that name is already present.
    if ! podman image exists docker.io/library/python:3.11-slim; then
        podman tag "$BASE_IMAGE" docker.io/library/python:3.11-slim
    fi
    log "base image $BASE_IMAGE ready"
}

main() {
    local status=0
    install_packages || status=$?
    if [ "$status" -ne 0 ]; then
        return "$status"
    fi
    if ! command -v podman >/dev/null 2>&1; then
        log "podman is not on PATH after installation"
        return 3
    fi
    install_podman_compose
    build_base_image
}

main "$@"
