#!/usr/bin/env bash
# Remake fixtures/runtime/lenet5_trained{,_dc}.cxrm: a LeNet-5-shaped network (conv 6@5x5,
# conv 16@5x5, fc 120, fc 10; 34K parameters) trained on the bundled MNIST subset, and its
# Deep Compression; then digit.png and both logits files. Training is deterministic for a
# seed on one machine but not bit-identical across machines, so the outputs are committed.
# Usage: tools/make_trained_fixtures.sh   (from anywhere; takes about a minute in release)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
cxrm=target/release/cxrm
out=fixtures/runtime
"$cxrm" train --arch cnn-6-16-120 --data fixtures/data/mnist --epochs 30 --shift 1 --seed 1 --quiet \
    -o "$out/lenet5_trained.cxrm"
"$cxrm" compress "$out/lenet5_trained.cxrm" --method deep-compression --epochs 8 --quiet \
    -o "$out/lenet5_trained_dc.cxrm"
CXRM_REGEN=1 cargo test --quiet --test runtime regenerate_trained_fixture_logits -- --ignored
"$cxrm" eval "$out/lenet5_trained.cxrm" --data fixtures/data/mnist | sed -n 1,2p
"$cxrm" eval "$out/lenet5_trained_dc.cxrm" --data fixtures/data/mnist | sed -n 1,2p
