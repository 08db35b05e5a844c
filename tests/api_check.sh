#!/usr/bin/env bash
# The API's lint and compatibility: `buf lint` over proto/ (rules and their
# justified exceptions in proto/buf.yaml), and, once a release is tagged
# (v*), `buf breaking` against the newest tag, so clients in other languages
# never break silently. buf comes from npm (scripts/test-oracles.sh).
#   tests/api_check.sh SOURCE_DIR NPM_DIR
set -euo pipefail
SRC=$(cd "$1" && pwd)
BUF="$(cd "$2" && pwd)/node_modules/.bin/buf"
cd "$SRC/proto"
"$BUF" lint
echo "buf lint: clean"
tag=$(git -C "$SRC" tag --list 'v*' --sort=-v:refname 2>/dev/null | head -1 || true)
if [ -z "$tag" ]; then
  echo "buf breaking: no release tag (v*) yet; nothing to compare with"
  exit 0
fi
"$BUF" breaking --against "$SRC/.git#tag=$tag,subdir=proto"
echo "buf breaking: compatible with $tag"
