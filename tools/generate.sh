#!/usr/bin/env bash
# Regenerates pkg/api (and the nexus OpenAPI document) from proto/ with buf
# and local plugins only, so it works without the schema registry
# (TOOLCHAIN.md). Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

# google/api/{annotations,http}.proto for the HTTP rules of the external API
# come from a pinned Go module (the registry is unreachable); they are copied
# to a git-ignored folder that buf.yaml lists as a second module.
googleapis_module=github.com/grpc-ecosystem/grpc-gateway/v2@v2.2.0
dir=$(go mod download -json "$googleapis_module" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
rm -rf third_party/googleapis
mkdir -p third_party/googleapis/google/api
cp "$dir"/third_party/googleapis/google/api/{annotations,http}.proto third_party/googleapis/google/api/
chmod -R u+w third_party/googleapis

buf() { go tool -modfile=tools/go.mod buf "$@"; }
buf lint
rm -rf pkg/api/omicron services/nexus/gateway/openapi/omicron
buf generate
