#!/usr/bin/env bash
# Build the suite's image from the Dockerfile without a Docker engine:
# buildah (chroot isolation), a wheelhouse built on this host (the build
# container reaches no package registry), and, where the public base image
# cannot be pulled, a local Debian base made with debootstrap.
#
#   deploy/tools/image.sh                 build IMAGE (default localhost/shop:dev)
#   IMAGE=... BASE_IMAGE=... deploy/tools/image.sh
#
# BASE_IMAGE defaults to the Dockerfile's public python:3.11 slim image when
# it can be pulled, else to localhost/debian-python:bookworm (made here once).
# Needs root, buildah, podman and (for the local base) debootstrap.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORK="$ROOT/.run/image"
IMAGE="${IMAGE:-localhost/shop:dev}"
LOCAL_BASE="localhost/debian-python:bookworm"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
say() { echo "image.sh: $*" >&2; }

for tool in buildah podman; do
  command -v "$tool" >/dev/null || { say "$tool is required (apt-get install buildah podman runc)"; exit 2; }
done
mkdir -p "$WORK"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/deploy/tools/containers.conf}"

# Wheels of the runtime dependencies only (pyproject's [project].dependencies
# at the versions of requirements.lock), built here where PyPI is reachable.
"$PYTHON" -c "import tomllib; print('\n'.join(tomllib.load(open('$ROOT/pyproject.toml', 'rb'))['project']['dependencies']))" \
  > "$WORK/runtime.txt"
rm -rf "$ROOT/wheels" && mkdir -p "$ROOT/wheels"
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check -r "$WORK/runtime.txt" -c "$ROOT/requirements.lock" \
  -w "$ROOT/wheels" >&2
cp "$WORK/runtime.txt" "$ROOT/wheels/runtime.txt"

if [ -z "${BASE_IMAGE:-}" ]; then
  PUBLIC="$(sed -n 's/^ARG BASE_IMAGE=//p' "$ROOT/Dockerfile" | head -1)"
  if podman image exists "$PUBLIC" || podman pull --quiet "$PUBLIC" >/dev/null 2>&1; then
    BASE_IMAGE="$PUBLIC"
  else
    BASE_IMAGE="$LOCAL_BASE"
    if ! podman image exists "$LOCAL_BASE"; then
      command -v debootstrap >/dev/null || { say "cannot pull $PUBLIC and debootstrap is missing"; exit 2; }
      if [ ! -x "$WORK/rootfs/usr/bin/python3" ]; then
        say "making $LOCAL_BASE with debootstrap (about a minute)"
        rm -rf "$WORK/rootfs"
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd \
          bookworm "$WORK/rootfs" http://deb.debian.org/debian >&2
      fi
      tar -C "$WORK/rootfs" -c . | podman import - "$LOCAL_BASE" >&2
    fi
  fi
fi

say "building $IMAGE from $BASE_IMAGE"
buildah bud --isolation chroot --layers=false -f "$ROOT/Dockerfile" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
  -t "$IMAGE" "$ROOT" >&2
rm -rf "$ROOT/wheels"
echo "IMAGE=$IMAGE"
