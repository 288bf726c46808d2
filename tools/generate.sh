#!/usr/bin/env bash
# Regenerates pkg/api from proto/ with buf and local plugins only, so it works
# without the schema registry (TOOLCHAIN.md). Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
buf() { go tool -modfile=tools/go.mod buf "$@"; }
buf lint
rm -rf pkg/api/omicron
buf generate
