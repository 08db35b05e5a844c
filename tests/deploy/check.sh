#!/usr/bin/env bash
# The deployment, checked as far as this machine can without a cluster or a
# Docker engine: each overlay rendered by `kubectl kustomize` (with secrets
# made by deploy/make-secrets.sh), every object validated (validate.js:
# API schemas, TypeScript types, invariants against the real binaries), and
# the Dockerfile's conventions linted.
#   tests/deploy/check.sh SOURCE_DIR BIN_DIR NPM_DIR
set -euo pipefail
SRC=$(cd "$1" && pwd)
BIN=$(cd "$2" && pwd)
NPM=$(cd "$3" && pwd)
if ! command -v kubectl >/dev/null 2>&1; then
  echo "kubectl is not installed: the manifests cannot be rendered here" >&2
  exit 77  # ctest: skipped
fi
WORK="$NPM/deploy-check"  # under node_modules' parent, so tsc finds the types
rm -rf "$WORK"
mkdir -p "$WORK"
cp -r "$SRC/deploy" "$WORK/deploy"
rendered=()
for overlay in cpu gpu; do
  rm -rf "$WORK/deploy/overlays/$overlay/secrets"
  "$WORK/deploy/make-secrets.sh" "$WORK/deploy/overlays/$overlay/secrets" >/dev/null
  kubectl kustomize "$WORK/deploy/overlays/$overlay" >"$WORK/$overlay.yaml"
  rendered+=("$overlay=$WORK/$overlay.yaml")
done
VERSION=$(sed -n 's/.*kEngineVersion = "\([^"]*\)".*/\1/p' "$SRC/worker/engine/trainer.h")
NODE_PATH="$NPM/node_modules" node "$SRC/tests/deploy/validate.js" --bin "$BIN" \
  --dockerfile "$SRC/Dockerfile" --version "$VERSION" --work "$WORK" "${rendered[@]}"

# The Dockerfile's conventions (hadolint cannot be installed here).
problems=0
lint() { echo "Dockerfile: $1" >&2; problems=$((problems + 1)); }
DF="$SRC/Dockerfile"
# Bases pinned: every FROM names a stage, or an ARG whose default has a
# dated or versioned tag (never latest, never untagged).
while read -r base; do
  case "$base" in
    \$\{*\}) name=${base#\$\{}; name=${name%\}}
             value=$(sed -n "s/^ARG $name=//p" "$DF")
             [ -n "$value" ] || lint "FROM $base: no default for ARG $name"
             case "$value" in
               *:latest|*:latest-*|"") lint "ARG $name=$value is not pinned" ;;
               *:*[0-9]*) ;;
               *) lint "ARG $name=$value is not pinned to a version" ;;
             esac ;;
    *) grep -qE "^FROM .* AS $base\$" "$DF" || lint "FROM $base is neither a stage nor a pinned ARG" ;;
  esac
done < <(sed -n 's/^FROM \([^ ]*\).*/\1/p' "$DF")
# Final images run as a numeric non-root user.
for target in cpu cuda; do
  user=$(awk -v t="$target" '/^FROM /{s=($NF==t)} s && /^USER /{print $2}' "$DF" | tail -1)
  case "$user" in
    ""|0|0:*|root*) lint "target $target runs as '${user:-root}'" ;;
    [0-9]*) ;;
    *) lint "target $target: USER $user is not numeric (the kubelet cannot check a name)" ;;
  esac
  # The tests gate the image.
  awk -v t="$target" '/^FROM /{s=($NF==t)} s' "$DF" | grep -q "COPY --from=$target-test " ||
    lint "target $target does not depend on its test stage"
done
# No secrets baked in, and none sent in the build context.
grep -nEi '^(ENV|ARG)[^=]*(PASSWORD|SECRET|TOKEN|PRIVATE)[^=]*=' "$DF" &&
  lint "a secret-looking ENV or ARG"
grep -nEi 'COPY .*(secrets|\.key|\.pem|tokens)' "$DF" && lint "a secret-looking COPY"
grep -qx '/deploy/overlays/\*/secrets' "$SRC/.dockerignore" ||
  lint ".dockerignore must keep deploy/overlays/*/secrets out of the build context"
grep -qE '^ADD ' "$DF" && lint "ADD fetches or unpacks; use COPY"
[ "$problems" -eq 0 ] || exit 1
echo "Dockerfile: bases pinned, non-root numeric users, tests gate both targets, no secrets"
