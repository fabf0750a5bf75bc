//! Deep Compression storage on real trained weights (LeNet-300-100 trained on MNIST by
//! `tools/train_reference_mlp.py`, until cxrm's own trainer produces them).
//!
//! Printed report (measured once, before the timings):
//! * bits per weight for prune 90% + 5-bit codebook + Huffman, per tensor and for the model;
//! * the Huffman-coded index and gap streams against `zstd -19` of the same symbols, one byte
//!   each (ours must not be larger);
//! * the Huffman code's average length against the stream's entropy;
//! * relative against CSR positions.
//!
//! Timings (criterion, throughput in bytes of output):
//! * `decode/codebook_huffman_to_f32`: Huffman + codebook lookup to dense f32 (fc1, 5-bit);
//! * `decode/zstd_index_bytes`: zstd decompression of the same index stream (one byte each);
//! * `decode/sparse_codebook_huffman_to_f32`: the full prune+quantize+Huffman chain (fc1).
//!
//! Run `python3 tools/train_reference_mlp.py` once first; it writes
//! `target/cxrm-bench/lenet300.safetensors`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use cxrm::compress::methods::deep_compression::prune::prune_layer;
use cxrm::compress::methods::deep_compression::store::{DeepPlan, Prepared, StreamMode};
use cxrm::format::encoding::sparse::Layout;
use cxrm::format::encoding::stream;
use cxrm::format::encoding::{self, DecodeContext, Encoded};
use cxrm::{DType, Limits};
use std::hint::black_box;
use std::path::PathBuf;

/// A named tensor: name, shape, values.
type Weight = (String, Vec<u64>, Vec<f32>);

fn weights() -> Option<Vec<Weight>> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/cxrm-bench/lenet300.safetensors");
    let Ok(bytes) = std::fs::read(&path) else {
        eprintln!(
            "{} is missing: run `python3 tools/train_reference_mlp.py` first; skipping",
            path.display()
        );
        return None;
    };
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, v)| {
            let values = v
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (name, v.shape().iter().map(|&d| d as u64).collect(), values)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Some(out)
}

/// The symbol streams of an encoded tensor, with their stored sizes.
fn streams_of(enc: &Encoded<'_>, shape: &[u64]) -> Vec<(&'static str, Vec<u16>, u8, u64)> {
    let limits = Limits::SPEC;
    let ctx = DecodeContext::in_memory("t", DType::F32, shape, &limits);
    let decoded = encoding::decode_detailed(&enc.stage_views(), &enc.payload, &ctx).unwrap();
    decoded
        .streams
        .into_iter()
        .map(|(name, s)| (name, s.symbols, s.width, s.stored_bytes))
        .collect()
}

fn report(weights: &[Weight]) {
    println!(
        "\nDeep Compression storage on LeNet-300-100 (trained weights), prune 90% + 5-bit + Huffman"
    );
    println!(
        "{:<12} {:>8} {:>11} {:>9} {:>10} {:>10}",
        "tensor", "params", "stored B", "bits/w", "relative B", "CSR B"
    );
    let (mut total_params, mut total_stored) = (0u64, 0u64);
    let mut stream_rows = Vec::new();
    for (name, shape, values) in weights {
        total_params += values.len() as u64;
        if shape.len() < 2 {
            total_stored += values.len() as u64 * 4;
            println!(
                "{:<12} {:>8} {:>11} {:>9.2} {:>10} {:>10}",
                name,
                values.len(),
                values.len() * 4,
                32.0,
                "-",
                "-"
            );
            continue;
        }
        let mut pruned = values.clone();
        prune_layer(&mut pruned, 0.9);
        let plan = DeepPlan::pruned().gaps(Some(5)).bits(5).huffman();
        let p = Prepared::new(&pruned, shape, &plan);
        let rel = p
            .build(
                Some(Layout::Relative { index_bits: 5 }),
                StreamMode::Entropy,
                None,
            )
            .unwrap();
        let csr = p
            .build(Some(Layout::Csr), StreamMode::Entropy, None)
            .unwrap();
        let best = if rel.payload.len() <= csr.payload.len() {
            &rel
        } else {
            &csr
        };
        total_stored += best.payload.len() as u64;
        println!(
            "{:<12} {:>8} {:>11} {:>9.3} {:>10} {:>10}",
            name,
            values.len(),
            best.payload.len(),
            best.payload.len() as f64 * 8.0 / values.len() as f64,
            rel.payload.len(),
            csr.payload.len()
        );
        let forced = p
            .build(
                Some(Layout::Relative { index_bits: 5 }),
                StreamMode::HuffmanOnly,
                None,
            )
            .unwrap();
        for (stream_name, symbols, width, huffman_size) in streams_of(&forced, shape) {
            let bytes: Vec<u8> = symbols.iter().map(|&s| s as u8).collect();
            let zstd19 = zstd::bulk::compress(&bytes, 19).unwrap().len();
            let freqs = stream::frequencies(&symbols, width);
            let entropy = encoding::huffman::entropy(&freqs);
            let lengths = encoding::huffman::code_lengths(&freqs, encoding::huffman::MAX_CODE_LEN);
            let code =
                encoding::huffman::coded_bits(&freqs, &lengths) as f64 / symbols.len() as f64;
            stream_rows.push((
                name.clone(),
                stream_name,
                symbols.len(),
                entropy,
                code,
                huffman_size,
                zstd19,
            ));
        }
    }
    println!(
        "model: {} params, {} f32 bytes -> {} bytes stored: {:.2} bits/weight, {:.1}x",
        total_params,
        total_params * 4,
        total_stored,
        total_stored as f64 * 8.0 / total_params as f64,
        (total_params * 4) as f64 / total_stored as f64
    );
    println!(
        "\n{:<12} {:<8} {:>8} {:>9} {:>9} {:>8} {:>13} {:>12}",
        "tensor", "stream", "symbols", "entropy", "code b/s", "excess", "Huffman B", "zstd-19 B"
    );
    for (t, s, n, h, code, huff, z) in stream_rows {
        println!(
            "{t:<12} {s:<8} {n:>8} {h:>9.4} {code:>9.4} {:>7.2}% {huff:>13} {z:>12}",
            (code / h - 1.0) * 100.0
        );
    }
}

fn decode(c: &mut Criterion) {
    let Some(weights) = weights() else { return };
    report(&weights);
    let (_, shape, values) = weights
        .iter()
        .find(|(n, _, _)| n == "fc1.weight")
        .expect("fc1.weight");
    let elements = values.len() as u64;
    let limits = Limits::SPEC;
    let ctx = DecodeContext::in_memory("t", DType::F32, shape, &limits);

    let plan = DeepPlan::quantized(5).huffman();
    let quantized = Prepared::new(values, shape, &plan);
    let cb_huff = quantized
        .build(None, StreamMode::HuffmanOnly, None)
        .unwrap();
    let index_bytes: Vec<u8> = quantized
        .codebook
        .as_ref()
        .unwrap()
        .2
        .indices
        .iter()
        .map(|&i| i as u8)
        .collect();
    let zstd_indices = zstd::bulk::compress(&index_bytes, 19).unwrap();

    let mut pruned = values.clone();
    prune_layer(&mut pruned, 0.9);
    let dc = Prepared::new(
        &pruned,
        shape,
        &DeepPlan {
            sparse: Some(Default::default()),
            ..plan
        },
    )
    .build(
        Some(Layout::Relative { index_bits: 5 }),
        StreamMode::HuffmanOnly,
        None,
    )
    .unwrap();

    let mut group = c.benchmark_group("decode");
    group
        .sample_size(30)
        .measurement_time(std::time::Duration::from_secs(4));
    group.throughput(Throughput::Bytes(elements * 4));
    for (name, encoded) in [
        ("codebook_huffman_to_f32", &cb_huff),
        ("sparse_codebook_huffman_to_f32", &dc),
    ] {
        let stages = encoded.stage_views();
        group.bench_function(name, |b| {
            b.iter(|| {
                black_box(
                    encoding::decode_chain(&stages, &encoded.payload, &ctx)
                        .unwrap()
                        .len(),
                )
            })
        });
    }
    group.throughput(Throughput::Bytes(index_bytes.len() as u64));
    group.bench_function("zstd_index_bytes", |b| {
        b.iter(|| {
            black_box(
                zstd::bulk::decompress(&zstd_indices, index_bytes.len())
                    .unwrap()
                    .len(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
