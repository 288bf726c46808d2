#!/usr/bin/env bash
# Regenerates pkg/api and the nexus OpenAPI 3 document from proto/ with buf
# and local plugins only, so it works without the schema registry
# (TOOLCHAIN.md). Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

# google/api/{annotations,http}.proto for the HTTP rules of the external API,
# field_behavior.proto for its required fields, and protoc-gen-openapiv2's
# options for the values of its string enums come from pinned Go modules (the
# registry is unreachable); they are copied to a git-ignored folder that
# buf.yaml lists as a second module.
module_dir() { go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'; }
googleapis=$(module_dir github.com/grpc-ecosystem/grpc-gateway/v2@v2.2.0)
# The options' Go package is the one go.mod's grpc-gateway provides.
openapiv2=$(module_dir github.com/grpc-ecosystem/grpc-gateway/v2@"$(go list -m -f '{{.Version}}' github.com/grpc-ecosystem/grpc-gateway/v2)")
rm -rf third_party/googleapis
mkdir -p third_party/googleapis/google/api third_party/googleapis/protoc-gen-openapiv2/options
cp "$googleapis"/third_party/googleapis/google/api/{annotations,http,field_behavior}.proto third_party/googleapis/google/api/
cp "$openapiv2"/protoc-gen-openapiv2/options/{annotations,openapiv2}.proto third_party/googleapis/protoc-gen-openapiv2/options/
chmod -R u+w third_party/googleapis

buf() { go tool -modfile=tools/go.mod buf "$@"; }
buf lint
rm -rf pkg/api/omicron services/nexus/gateway/openapi/omicron
buf generate

# The served OpenAPI 3 document, corrected to the wire (openapi3gen's doc).
# The gateway embeds it and the generator imports the gateway, so a missing
# document is first stood in for by an empty one.
openapi3=services/nexus/gateway/openapi/nexus.openapi.json
[ -f "$openapi3" ] || echo '{}' > "$openapi3"
go run ./services/nexus/gateway/openapi3gen \
  --swagger services/nexus/gateway/openapi/omicron/nexus/v1/external.swagger.json --out "$openapi3"
