#!/usr/bin/env bash
# The main job at this stage of the project: build cxrm, pack the bundled model (safetensors
# weights + JSON graph) into a .cxrm file, inspect it, verify it, and convert it back.
# Usage: tools/demo.sh [OUT_DIR]   (default: out/)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out}
mkdir -p "$out"
cargo build --release --quiet --bin cxrm
cxrm=target/release/cxrm
set -x
"$cxrm" pack fixtures/interop/model.safetensors -o "$out/model.cxrm" \
    --graph fixtures/interop/model.graph.json --zstd 19 --meta train.note="packed by tools/demo.sh"
"$cxrm" inspect "$out/model.cxrm"
"$cxrm" verify "$out/model.cxrm"
"$cxrm" convert "$out/model.cxrm" -o "$out/model.safetensors"
cmp <("$cxrm" inspect --json fixtures/valid/model.cxrm | python3 -c 'import json,sys; print(json.load(sys.stdin)["totals"]["params"])') \
    <("$cxrm" inspect --json "$out/model.cxrm" | python3 -c 'import json,sys; print(json.load(sys.stdin)["totals"]["params"])')
