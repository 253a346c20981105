#!/usr/bin/env bash
# Builds the `lucia` container image from the workspace:
#
#   1. cargo build --release --bin lucia   (on the host, into $CARGO_TARGET_DIR)
#   2. docker build -f deploy/Dockerfile --build-arg BASE_IMAGE=... -t lucia:latest
#      over a small context (the binary and the entrypoint only).
#
# Usage: scripts/build-image.sh [--local-base] [--base IMAGE] [--tag TAG] [--no-cargo]
#
#   --base IMAGE   base image (default debian:bookworm-slim, pulled from a registry)
#   --local-base   no registry: use lucia-base:bookworm, made once with
#                  `debootstrap --variant=minbase bookworm` and `docker import`
#                  (needs root and debootstrap: apt-get install debootstrap;
#                  reused when it already exists; LUCIA_DEBIAN_MIRROR picks the mirror)
#   --tag TAG      image tag (default lucia:latest)
#   --no-cargo     use the binary already built
#
# The binary links glibc dynamically: build on Debian bookworm (or an older
# glibc) so that it runs on the bookworm base.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
base=debian:bookworm-slim
tag=lucia:latest
local_base=0
cargo=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --local-base) local_base=1 ;;
        --base) base=$2; shift ;;
        --tag) tag=$2; shift ;;
        --no-cargo) cargo=0 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/lucia-target}
binary="$CARGO_TARGET_DIR/release/lucia"

make_local_base() {
    local image=lucia-base:bookworm
    if docker image inspect "$image" >/dev/null 2>&1; then
        echo "base image $image exists, reusing it" >&2
        return
    fi
    command -v debootstrap >/dev/null || {
        echo "debootstrap is missing: apt-get install debootstrap" >&2
        exit 1
    }
    local dir
    dir=$(mktemp -d /tmp/lucia-base.XXXXXX)
    trap 'rm -rf "$dir"' RETURN
    echo "debootstrap --variant=minbase bookworm into $dir" >&2
    debootstrap --variant=minbase bookworm "$dir" \
        "${LUCIA_DEBIAN_MIRROR:-http://deb.debian.org/debian}" >&2
    # Trim what a container never uses (as debian:*-slim does).
    chroot "$dir" apt-get clean
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin \
        "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* \
        "$dir"/usr/share/locale/* "$dir"/var/log/*.log "$dir"/var/log/apt/*
    tar -C "$dir" --numeric-owner -c . |
        docker import --change 'CMD ["/bin/bash"]' - "$image" >&2
    echo "made base image $image ($(docker image inspect -f '{{.Size}}' "$image") bytes)" >&2
}

if [[ $local_base == 1 ]]; then
    make_local_base
    base=lucia-base:bookworm
fi

if [[ $cargo == 1 ]]; then
    (cd "$root" && cargo build --release --bin lucia)
fi
[[ -x "$binary" ]] || { echo "no binary at $binary" >&2; exit 1; }

context=$(mktemp -d /tmp/lucia-image.XXXXXX)
trap 'rm -rf "$context"' EXIT
cp "$binary" "$context/lucia"
cp "$root/deploy/docker/entrypoint.sh" "$context/entrypoint.sh"
docker build -f "$root/deploy/Dockerfile" --build-arg "BASE_IMAGE=$base" -t "$tag" "$context"
echo "built $tag on $base: $(docker image inspect -f '{{.Size}}' "$tag") bytes"
