#!/usr/bin/env bash
# Re-fetch the vendored Chart.js from npm and check it: the tarball against npm's
# integrity recorded in VENDOR, the file against its sha256, and the copy here
# against both. `fetch.sh --update` also replaces the vendored file and licence.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck disable=SC1091
. "$here/VENDOR"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$package@$version" >/dev/null)
tarball="$(ls "$tmp"/*.tgz)"
got="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
[ "$got" = "$integrity" ] || { echo "integrity mismatch for $package@$version: $got" >&2; exit 1; }
tar -xzf "$tarball" -C "$tmp"
name="$(basename "$file")"
got="$(sha256sum "$tmp/package/$file" | cut -d' ' -f1)"
[ "$got" = "$sha256" ] || { echo "sha256 mismatch for $file: $got" >&2; exit 1; }
if [ "${1:-}" = "--update" ]; then
  cp "$tmp/package/$file" "$here/$name"
  cp "$tmp/package/LICENSE.md" "$here/LICENSE.md"
fi
cmp -s "$tmp/package/$file" "$here/$name" || { echo "$here/$name differs from $package@$version" >&2; exit 1; }
echo "$package@$version $file: sha256 $sha256 ok"
