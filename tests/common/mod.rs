//! The conformance fixtures, as code: every file in `fixtures/` is built here, so the golden
//! files can be regenerated (`CXRM_REGEN=1 cargo test --test fixtures regenerate -- --ignored`)
//! and a change to the writer that alters their bytes fails `cargo test`.
#![allow(dead_code)]

use cxrm::compress::methods::deep_compression::store::{
    DeepPlan, Prepared, Quantize, SparsePlan, StreamMode,
};
use cxrm::format::container::graph::INPUT;
use cxrm::format::container::header::HEADER_LEN;
use cxrm::format::encoding;
use cxrm::format::encoding::sparse::Layout;
use cxrm::{Cxrm, DType, Graph, Node, Value, ValueType, Writer};
use serde_json::{Value as Json, json};
use std::borrow::Cow;
use std::path::PathBuf;

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Deterministic pseudo-random numbers, so fixtures never depend on a crate's RNG.
pub use cxrm::format::lcg::Lcg;

/// Fixture weights from the project's LCG.
pub trait FixtureWeights {
    fn weight(&mut self, scale: f32) -> f32;
}
impl FixtureWeights for Lcg {
    /// Uniform in [-scale, scale), rounded to a multiple of 2^-12 so it is exact in f32 and f16.
    fn weight(&mut self, scale: f32) -> f32 {
        // 24 of the 31 bits: shifting by 8 once left 23, so every weight came out negative and
        // the random LeNet-5 fixtures' ReLUs passed nothing (their logits were fc3's bias).
        let u = (self.next_u32() >> 7) as f32 / (1u32 << 24) as f32;
        (((u * 2.0 - 1.0) * scale) * 4096.0).round() / 4096.0
    }
}

pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub struct ValidFixture {
    pub name: &'static str,
    pub bytes: Vec<u8>,
}

fn finish(w: &Writer<'_>) -> Vec<u8> {
    w.to_bytes().expect("fixture writes")
}

pub fn tiny() -> Vec<u8> {
    let mut w = Writer::new();
    w.set_metadata("model.name", Value::String("tiny".into()));
    w.add_dense("w", DType::F32, &[2], f32_bytes(&[1.0, -2.0]))
        .unwrap();
    finish(&w)
}

/// Every preprocessing key of format 1.3 (spec §6.1), so a reader sees a 1.3 file.
pub fn preprocessing() -> Vec<u8> {
    let mut w = Writer::new();
    w.set_metadata("model.name", Value::String("preprocessing".into()));
    w.set_metadata("input.shape", Value::ints([3, 4, 5]));
    w.set_metadata("input.resize", Value::String("nearest".into()));
    w.set_metadata("input.resize_version", Value::String("10".into()));
    w.set_metadata("input.crop_from", Value::ints([7, 8]));
    w.set_metadata("input.channel_order", Value::String("bgr".into()));
    w.set_metadata("input.scale", Value::floats([1.0 / 127.5]));
    w.set_metadata("input.offset", Value::floats([-1.0]));
    w.set_metadata("input.mean", Value::floats([0.485, 0.456, 0.406]));
    w.set_metadata("input.std", Value::floats([0.229, 0.224, 0.225]));
    w.add_dense("w", DType::F32, &[1], f32_bytes(&[0.5]))
        .unwrap();
    finish(&w)
}

/// A binary layer of format 1.5 (spec §7): a `sign` with per-channel thresholds in front of a
/// `conv2d` whose weights are stored `binary`, so a reader sees a 1.5 file.
pub fn binary_layers() -> Vec<u8> {
    let mut w = Writer::new();
    w.set_metadata("model.name", Value::String("binary layers".into()));
    w.set_metadata("input.shape", Value::ints([2, 3, 3]));
    w.add_dense("s.threshold", DType::F32, &[2], f32_bytes(&[0.25, -2.0]))
        .unwrap();
    let b = encoding::binary::binarize(&[0.5, -0.5, 0.25, -0.25], 2, 2, DType::F32);
    let binary = encoding::binary::encode(
        &b,
        encoding::binary::Params {
            scale_dtype: DType::F32,
        },
    );
    w.add_tensor("c.weight", DType::F32, &[2, 2, 1, 1], binary)
        .unwrap();
    w.set_graph(Graph {
        nodes: vec![
            Node::new("s", "sign", &[INPUT], &["s.threshold"]),
            Node::new("c", "conv2d", &["s"], &["c.weight"]),
            Node::new("f", "flatten", &["c"], &[]),
        ],
    });
    finish(&w)
}

pub fn dtypes() -> Vec<u8> {
    let mut w = Writer::new();
    let vals = [0.5f64, -1.25, 3.0, 0.0, -0.0, 100.0];
    w.add_dense(
        "t_f32",
        DType::F32,
        &[2, 3],
        vals.iter()
            .flat_map(|v| (*v as f32).to_le_bytes())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    w.add_dense(
        "t_f16",
        DType::F16,
        &[6],
        vals.iter()
            .flat_map(|v| half::f16::from_f64(*v).to_le_bytes())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    w.add_dense(
        "t_bf16",
        DType::BF16,
        &[3, 2],
        vals.iter()
            .flat_map(|v| half::bf16::from_f64(*v).to_le_bytes())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    w.add_dense("t_i8", DType::I8, &[4], vec![0u8, 127, 128, 255])
        .unwrap();
    w.add_dense("t_u8", DType::U8, &[1, 1, 4], vec![0u8, 1, 128, 255])
        .unwrap();
    w.add_dense(
        "t_i32",
        DType::I32,
        &[2],
        [i32::MIN, 7]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    w.add_dense(
        "t_i64",
        DType::I64,
        &[2],
        [-(1i64 << 40), (1 << 53) + 1]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    w.add_dense(
        "t_f64",
        DType::F64,
        &[2],
        [std::f64::consts::PI, -1e-300]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    w.add_dense("scalar", DType::F32, &[], 42.5f32.to_le_bytes().to_vec())
        .unwrap();
    w.add_dense("empty", DType::F32, &[0, 3], Vec::new())
        .unwrap();
    finish(&w)
}

pub fn zstd() -> Vec<u8> {
    let mut w = Writer::new();
    let repetitive: Vec<f32> = (0..1024).map(|i| ((i % 8) as f32) * 0.25).collect();
    let encoded = encoding::zstd::encode(
        encoding::dense::encode(Cow::Owned(f32_bytes(&repetitive))),
        19,
    )
    .unwrap();
    assert_eq!(encoded.stages.len(), 2, "fixture data must compress");
    w.add_tensor("repetitive", DType::F32, &[32, 32], encoded)
        .unwrap();
    let mut rng = Lcg(7);
    let noise: Vec<u8> = (0..16).map(|_| rng.next_u32() as u8).collect();
    w.add_dense("noise", DType::U8, &[16], noise).unwrap();
    finish(&w)
}

/// A small LeNet-shaped network: conv 4@3x3 → relu → maxpool 2 → flatten → dense 10 → softmax,
/// on 1×8×8 inputs, with everything a runtime needs in its metadata.
pub fn model() -> Vec<u8> {
    let mut rng = Lcg(2024);
    let mut w = Writer::new();
    w.set_metadata("model.name", Value::String("lenet-tiny".into()))
        .set_metadata(
            "model.classes",
            Value::strings((0..10).map(|i| format!("digit-{i}"))),
        )
        .set_metadata("input.shape", Value::ints([1, 8, 8]))
        .set_metadata("input.mean", Value::floats([0.1307]))
        .set_metadata("input.std", Value::floats([0.3081]))
        .set_metadata(
            "train.note",
            Value::String("random weights, for conformance tests".into()),
        );
    let conv_w: Vec<f32> = (0..4 * 9).map(|_| rng.weight(0.5)).collect();
    let conv_b: Vec<f32> = (0..4).map(|_| rng.weight(0.1)).collect();
    let fc_w: Vec<f32> = (0..10 * 36).map(|_| rng.weight(0.3)).collect();
    let fc_b: Vec<f32> = (0..10).map(|_| rng.weight(0.1)).collect();
    w.add_dense(
        "conv1.weight",
        DType::F32,
        &[4, 1, 3, 3],
        f32_bytes(&conv_w),
    )
    .unwrap();
    w.add_dense("conv1.bias", DType::F32, &[4], f32_bytes(&conv_b))
        .unwrap();
    w.add_dense("fc.weight", DType::F32, &[10, 36], f32_bytes(&fc_w))
        .unwrap();
    w.add_dense("fc.bias", DType::F32, &[10], f32_bytes(&fc_b))
        .unwrap();
    w.set_graph(Graph {
        nodes: vec![
            Node::new("conv1", "conv2d", &[INPUT], &["conv1.weight", "conv1.bias"])
                .attr("stride", Value::ints([1, 1]))
                .attr("padding", Value::ints([0, 0, 0, 0])),
            Node::new("relu1", "relu", &["conv1"], &[]),
            Node::new("pool1", "max_pool2d", &["relu1"], &[])
                .attr("kernel", Value::ints([2, 2]))
                .attr("stride", Value::ints([2, 2])),
            Node::new("flatten", "flatten", &["pool1"], &[]),
            Node::new("fc", "dense", &["flatten"], &["fc.weight", "fc.bias"]),
            Node::new("prob", "softmax", &["fc"], &[]),
        ],
    });
    finish(&w)
}

/// A file from a later minor version: an optional section of an unknown kind, every metadata
/// value type including nested arrays and non-ASCII text. A 1.0 reader must read it.
pub fn forward_compat() -> Vec<u8> {
    let mut w = Writer::new();
    w.set_metadata("string", Value::String("héllo, wörld ✓".into()))
        .set_metadata("int", Value::Int(-9_007_199_254_740_993))
        .set_metadata("float", Value::Float(-0.1))
        .set_metadata("bool", Value::Bool(true))
        .set_metadata(
            "nested",
            Value::Array(
                ValueType::Array,
                vec![Value::ints([1, 2]), Value::ints([]), Value::ints([3])],
            ),
        )
        .set_metadata(
            "bools",
            Value::Array(ValueType::Bool, vec![Value::Bool(false), Value::Bool(true)]),
        );
    w.add_raw_section(
        1000,
        false,
        b"an extension this reader does not know".to_vec(),
    )
    .unwrap();
    w.add_dense(
        "w",
        DType::F16,
        &[2, 2],
        [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let mut bytes = finish(&w);
    bytes[10..12].copy_from_slice(&7u16.to_le_bytes()); // version 1.7
    fix_header_crc(&mut bytes);
    bytes
}

/// One encoded tensor, laid out exactly as asked (the fixtures pin each form down rather than
/// letting the encoder pick the smallest).
fn deep_form(
    values: &[f32],
    shape: &[u64],
    sparse: Option<Layout>,
    bits: Option<(u8, DType)>,
    mode: StreamMode,
    zstd: Option<i32>,
) -> encoding::Encoded<'static> {
    let plan = DeepPlan {
        sparse: sparse.map(|_| SparsePlan::default()),
        quantize: bits.map(|(bits, centroid_dtype)| Quantize {
            centroid_dtype,
            ..Quantize::bits(bits)
        }),
        ..DeepPlan::default()
    };
    Prepared::new(values, shape, &plan)
        .build(sparse, mode, zstd)
        .unwrap()
}

fn pruned(n: usize, seed: u64, sparsity: f64) -> Vec<f32> {
    let mut rng = Lcg(seed);
    let mut v: Vec<f32> = (0..n).map(|_| rng.weight(0.5)).collect();
    cxrm::compress::methods::deep_compression::prune::prune_layer(&mut v, sparsity);
    v
}

/// Deep Compression's encodings (format 1.1): every stage, every layout and stream coding, and
/// the edge cases (one symbol, all or none pruned, 1-bit codebooks, 24-bit Huffman codes,
/// escapes, zero elements).
pub fn deep() -> Vec<u8> {
    use StreamMode::*;
    let rel5 = Some(Layout::Relative { index_bits: 5 });
    let mut w = Writer::new();
    w.set_metadata(
        "model.name",
        Value::String("deep-compression conformance".into()),
    );
    let mut add = |name: &str, dtype: DType, shape: &[u64], e: encoding::Encoded<'static>| {
        w.add_tensor(name, dtype, shape, e).unwrap();
    };
    let a = pruned(128, 11, 0.75);
    add(
        "relative",
        DType::F32,
        &[8, 16],
        deep_form(&a, &[8, 16], rel5, None, Packed, None),
    );
    add(
        "csr",
        DType::F32,
        &[8, 16],
        deep_form(&a, &[8, 16], Some(Layout::Csr), None, Packed, None),
    );
    let b = pruned(256, 12, 0.9);
    add(
        "sparse_codebook",
        DType::F32,
        &[16, 16],
        deep_form(&b, &[16, 16], rel5, Some((4, DType::F32)), Packed, None),
    );
    let c = pruned(1024, 13, 0.9);
    add(
        "sparse_codebook_huffman",
        DType::F32,
        &[32, 32],
        deep_form(
            &c,
            &[32, 32],
            Some(Layout::Relative { index_bits: 8 }),
            Some((5, DType::F32)),
            HuffmanOnly,
            None,
        ),
    );
    add(
        "sparse_codebook_bytes_zstd",
        DType::F32,
        &[32, 32],
        deep_form(&c, &[32, 32], rel5, Some((5, DType::F32)), Bytes, Some(19)),
    );
    let d = pruned(60, 14, 0.0);
    add(
        "codebook",
        DType::F32,
        &[6, 10],
        deep_form(&d, &[6, 10], None, Some((3, DType::F32)), Packed, None),
    );
    add(
        "codebook_huffman_f16",
        DType::F32,
        &[6, 10],
        deep_form(&d, &[6, 10], None, Some((2, DType::F16)), HuffmanOnly, None),
    );
    add(
        "csr_huffman",
        DType::F32,
        &[6, 10],
        deep_form(
            &pruned(60, 15, 0.5),
            &[6, 10],
            Some(Layout::Csr),
            Some((3, DType::F32)),
            HuffmanOnly,
            None,
        ),
    );
    add(
        "mixed_codings",
        DType::F32,
        &[32, 32],
        deep_form(&c, &[32, 32], rel5, Some((5, DType::F32)), Entropy, None),
    );
    add(
        "one_bit",
        DType::F32,
        &[4, 8],
        deep_form(
            &pruned(32, 16, 0.0),
            &[4, 8],
            None,
            Some((1, DType::F32)),
            Packed,
            None,
        ),
    );
    add(
        "single_symbol",
        DType::F32,
        &[4, 4],
        deep_form(
            &[0.5; 16],
            &[4, 4],
            None,
            Some((3, DType::F32)),
            HuffmanOnly,
            None,
        ),
    );
    add(
        "all_pruned",
        DType::F32,
        &[4, 4],
        deep_form(
            &[0.0; 16],
            &[4, 4],
            rel5,
            Some((3, DType::F32)),
            HuffmanOnly,
            None,
        ),
    );
    add(
        "none_pruned",
        DType::F32,
        &[3, 5],
        deep_form(&pruned(15, 17, 0.0), &[3, 5], rel5, None, Packed, None),
    );
    add(
        "zero_elements",
        DType::F32,
        &[0, 4],
        deep_form(&[], &[0, 4], rel5, Some((3, DType::F32)), HuffmanOnly, None),
    );
    let mut far = vec![0.0f32; 600];
    far[0] = 1.0;
    far[300] = -2.0;
    far[599] = 3.0;
    add(
        "escapes",
        DType::F32,
        &[1, 600],
        deep_form(
            &far,
            &[1, 600],
            Some(Layout::Relative { index_bits: 2 }),
            None,
            Packed,
            None,
        ),
    );
    // bf16 tensor decoded from f32 centroids (rounded to nearest even).
    let e: Vec<f32> = pruned(8, 18, 0.0);
    add(
        "bf16_codebook",
        DType::BF16,
        &[2, 4],
        deep_form(&e, &[2, 4], None, Some((2, DType::F32)), Packed, None),
    );
    add("max_length_codes", DType::F32, &[25], max_length_codes());
    finish(&w)
}

/// A codebook tensor whose index stream uses a valid, complete Huffman code with lengths
/// 1, 2, ..., 24, 24: the longest the format allows. Encoders only produce such codes for very
/// skewed streams, so it is written by hand.
fn max_length_codes() -> encoding::Encoded<'static> {
    let mut lengths: Vec<u8> = (1..=24).collect();
    lengths.push(24);
    let symbols: Vec<u16> = (0..25).rev().collect();
    let mut payload = Vec::new();
    for i in 0..25 {
        payload.extend_from_slice(&(i as f32 * 0.125 - 1.5).to_le_bytes());
    }
    encoding::stream::write_huffman(&symbols, 5, &lengths, &mut payload);
    encoding::Encoded {
        stages: vec![
            encoding::StageSpec {
                id: encoding::StageId::Codebook,
                params: encoding::codebook::Params {
                    bits: 5,
                    centroid_dtype: DType::F32,
                    k: 25,
                }
                .to_bytes(),
            },
            encoding::StageSpec {
                id: encoding::StageId::Huffman,
                params: vec![],
            },
        ],
        payload: Cow::Owned(payload),
    }
}

fn lcg_weights(rng: &mut Lcg, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.weight(scale)).collect()
}

/// One tensor in each factored representation (spec §5.8–§5.11), in f32, f16 and bf16, one
/// of them under zstd. Factors are multiples of 2^-12, so every sum in the reconstruction is
/// exact in f64 and a reader's summation order cannot change a value.
pub fn factored() -> Vec<u8> {
    use encoding::{binary, lowrank, tucker};
    let mut rng = Lcg(0xfac7);
    let mut w = Writer::new();
    w.set_metadata("model.name", Value::String("factored".into()));
    let lr = lowrank::LowRank {
        rows: 3,
        cols: 4,
        rank: 2,
        u: lcg_weights(&mut rng, 6, 1.0),
        v: lcg_weights(&mut rng, 8, 1.0),
    };
    w.add_tensor(
        "lowrank.f32",
        DType::F32,
        &[3, 4],
        lowrank::encode(&lr, DType::F32),
    )
    .unwrap();
    // A conv-shaped weight [4, 2, 1, 3] as a 4 x 6 matrix, f16 factors, bf16 values.
    let conv = lowrank::LowRank {
        rows: 4,
        cols: 6,
        rank: 1,
        u: lcg_weights(&mut rng, 4, 1.0),
        v: lcg_weights(&mut rng, 6, 1.0),
    };
    w.add_tensor(
        "lowrank.bf16",
        DType::BF16,
        &[4, 2, 1, 3],
        lowrank::encode(&conv, DType::F16),
    )
    .unwrap();
    let tk = tucker::Tucker {
        out: 4,
        inp: 3,
        spatial: 4,
        rank_out: 2,
        rank_in: 2,
        u_out: lcg_weights(&mut rng, 8, 1.0),
        core: lcg_weights(&mut rng, 16, 1.0),
        u_in: lcg_weights(&mut rng, 6, 1.0),
    };
    w.add_tensor(
        "tucker.f32",
        DType::F32,
        &[4, 3, 2, 2],
        tucker::encode(&tk, DType::F16),
    )
    .unwrap();
    // Ten columns: each row's signs take two bytes, the second padded with six zero bits.
    let signs = lcg_weights(&mut rng, 30, 1.0);
    let bin = binary::binarize(&signs, 3, 10, DType::F32);
    w.add_tensor(
        "binary.f32",
        DType::F32,
        &[3, 10],
        binary::encode(
            &bin,
            binary::Params {
                scale_dtype: DType::F32,
            },
        ),
    )
    .unwrap();
    // Periodic signs, so that zstd has something to find.
    let periodic: Vec<f32> = (0..2 * 256)
        .map(|i| if (i / 3) % 2 == 0 { 0.25 } else { -0.75 } * (1 + i / 256) as f32)
        .collect();
    let bin16 = binary::binarize(&periodic, 2, 256, DType::F16);
    let mut enc = binary::encode(
        &bin16,
        binary::Params {
            scale_dtype: DType::F16,
        },
    );
    enc = encoding::zstd::encode(enc, 19).unwrap();
    assert_eq!(enc.stages.len(), 2, "zstd kept");
    w.add_tensor("binary.f16.zstd", DType::F16, &[2, 16, 4, 4], enc)
        .unwrap();
    finish(&w)
}

/// MIRACLE tensors (spec §5.12) in f32, f16, bf16 and f64: index widths of 3 to 32 bits, so
/// the packed indices cross byte boundaries and the last byte is padded; one without
/// elements. Every value is regenerated from the seeds, so a reader whose generator
/// differs in any bit fails here.
pub fn miracle() -> Vec<u8> {
    use encoding::miracle::{self, Miracle, Params};
    let mut rng = Lcg(0x3a1c);
    let mut w = Writer::new();
    w.set_metadata("model.name", Value::String("miracle".into()));
    let mut coded = |blocks: u32, index_bits: u8, sigma: f32| {
        let mask = if index_bits == 32 {
            u32::MAX
        } else {
            (1 << index_bits) - 1
        };
        Miracle {
            params: Params {
                seed: rng.next_u64(),
                blocks,
                index_bits,
                prior_sigma: sigma,
            },
            indices: (0..blocks).map(|_| rng.next_u64() as u32 & mask).collect(),
        }
    };
    let conv = coded(7, 10, 0.125);
    let fc = coded(5, 3, 0.03);
    let small = coded(4, 32, 2.5);
    let wide = coded(6, 13, 1.0e-3);
    w.add_tensor(
        "conv.f32",
        DType::F32,
        &[4, 1, 5, 5],
        miracle::encode(&conv),
    )
    .unwrap();
    w.add_tensor("fc.f16", DType::F16, &[3, 4], miracle::encode(&fc))
        .unwrap();
    w.add_tensor("v.f64", DType::F64, &[5], miracle::encode(&small))
        .unwrap();
    w.add_tensor("wide.bf16", DType::BF16, &[2, 9], miracle::encode(&wide))
        .unwrap();
    let empty = Miracle {
        params: Params {
            blocks: 0,
            ..conv.params
        },
        indices: Vec::new(),
    };
    w.add_tensor("empty", DType::F32, &[0, 4], miracle::encode(&empty))
        .unwrap();
    finish(&w)
}

/// Hashed MIRACLE tensors (spec §5.13): weights sharing fewer values, each with a hashed
/// sign, the values MIRACLE-coded. f32 and f16, a tensor sharing a single value, one sharing
/// none (as many values as elements), and an empty one. A reader that deals the values or
/// hashes the signs differently fails here.
pub fn hashed() -> Vec<u8> {
    use encoding::hashed::{self, Params as Shared};
    use encoding::miracle::{Miracle, Params};
    let mut rng = Lcg(0x4a5e);
    let mut w = Writer::new();
    w.set_metadata("model.name", Value::String("hashed".into()));
    let mut coded = |elements: u64, values: u32, blocks: u32, index_bits: u8, sigma: f32| {
        let shared = Shared {
            seed: rng.next_u64(),
            values,
        };
        let m = Miracle {
            params: Params {
                seed: rng.next_u64(),
                blocks,
                index_bits,
                prior_sigma: sigma,
            },
            indices: (0..blocks)
                .map(|_| rng.next_u64() as u32 & ((1 << index_bits) - 1))
                .collect(),
        };
        assert!(values as u64 <= elements);
        hashed::encode(shared, &m)
    };
    let fc = coded(4 * 25, 10, 3, 7, 0.25);
    let conv = coded(2 * 3 * 3 * 3, 27, 5, 12, 0.0625);
    let one = coded(8, 1, 1, 4, 1.5);
    let all = coded(6, 6, 2, 9, 0.5);
    let empty = coded(0, 0, 0, 4, 0.5);
    w.add_tensor("fc.f32", DType::F32, &[4, 25], fc).unwrap();
    w.add_tensor("conv.f16", DType::F16, &[2, 3, 3, 3], conv)
        .unwrap();
    w.add_tensor("one.f32", DType::F32, &[8], one).unwrap();
    w.add_tensor("all.f32", DType::F32, &[2, 3], all).unwrap();
    w.add_tensor("empty", DType::F32, &[0, 5], empty).unwrap();
    finish(&w)
}

pub fn empty() -> Vec<u8> {
    finish(&Writer::new())
}

pub fn valid() -> Vec<ValidFixture> {
    vec![
        ValidFixture {
            name: "tiny",
            bytes: tiny(),
        },
        ValidFixture {
            name: "dtypes",
            bytes: dtypes(),
        },
        ValidFixture {
            name: "zstd",
            bytes: zstd(),
        },
        ValidFixture {
            name: "model",
            bytes: model(),
        },
        ValidFixture {
            name: "forward_compat",
            bytes: forward_compat(),
        },
        ValidFixture {
            name: "empty",
            bytes: empty(),
        },
        ValidFixture {
            name: "deep",
            bytes: deep(),
        },
        ValidFixture {
            name: "factored",
            bytes: factored(),
        },
        ValidFixture {
            name: "corners",
            bytes: corners(),
        },
        ValidFixture {
            name: "preprocessing",
            bytes: preprocessing(),
        },
        ValidFixture {
            name: "miracle",
            bytes: miracle(),
        },
        ValidFixture {
            name: "binary_layers",
            bytes: binary_layers(),
        },
        ValidFixture {
            name: "hashed",
            bytes: hashed(),
        },
    ]
}

/// One zstd frame holding `data` in a single raw block (RFC 8878), with the given frame header
/// descriptor, window descriptor (none for a single-segment frame) and content size field: the
/// frames libzstd's compressor would never write, byte by byte.
pub fn raw_zstd_frame(data: &[u8], fhd: u8, window: Option<u8>, fcs: &[u8]) -> Vec<u8> {
    let mut f = 0xFD2F_B528u32.to_le_bytes().to_vec();
    f.push(fhd);
    f.extend(window);
    f.extend_from_slice(fcs);
    f.extend_from_slice(&((data.len() as u32) << 3 | 1).to_le_bytes()[..3]);
    f.extend_from_slice(data);
    f
}

/// `dense+zstd` of `decoded_len` bytes whose stored bytes are `frames`.
fn dense_zstd(frames: Vec<u8>, decoded_len: u64) -> encoding::Encoded<'static> {
    encoding::Encoded {
        stages: vec![
            stage(encoding::StageId::Dense, vec![]),
            stage(encoding::StageId::Zstd, decoded_len.to_le_bytes().to_vec()),
        ],
        payload: Cow::Owned(frames),
    }
}

/// A zstd frame of `data` with a content checksum, as libzstd writes it.
pub fn zstd_with_checksum(data: &[u8]) -> Vec<u8> {
    let mut c = ::zstd::bulk::Compressor::new(3).unwrap();
    c.set_parameter(::zstd::zstd_safe::CParameter::ChecksumFlag(true))
        .unwrap();
    c.set_parameter(::zstd::zstd_safe::CParameter::ContentSizeFlag(true))
        .unwrap();
    c.compress(data).unwrap()
}

/// Valid corner cases where two readings of the spec would give different values or a reader
/// would wrongly refuse the file: signed zeros and rounding in the factored sums, a relative gap
/// stream exactly at its bound, CSR over `[n, 0]`, zstd windows at the limit, and names and keys
/// that differ only by a byte-order mark.
pub fn corners() -> Vec<u8> {
    use encoding::{lowrank, tucker};
    let mut w = Writer::new();
    // Keys compared byte for byte: a BOM makes a different key.
    w.set_metadata("k", Value::Int(1));
    w.set_metadata("\u{feff}k", Value::Int(2));
    // Every product is -0.0; sums start from +0.0, so every element is +0.0 (§5.8).
    w.add_tensor(
        "lowrank.negative_zero",
        DType::F32,
        &[2, 2],
        lowrank::encode(
            &lowrank::LowRank {
                rows: 2,
                cols: 2,
                rank: 2,
                u: vec![0.5; 4],
                v: vec![-0.0; 4],
            },
            DType::F32,
        ),
    )
    .unwrap();
    w.add_tensor(
        "tucker.negative_zero",
        DType::F32,
        &[2, 2],
        tucker::encode(
            &tucker::Tucker {
                out: 2,
                inp: 2,
                spatial: 1,
                rank_out: 1,
                rank_in: 1,
                u_out: vec![0.5; 2],
                core: vec![-0.0],
                u_in: vec![0.5; 2],
            },
            DType::F32,
        ),
    )
    .unwrap();
    // Rounding: element [0, 0] is 1 + 2^-p + 2^-40 (p one past the dtype's precision), which
    // rounds up when rounded once from binary64 but to 1 when summed or rounded in f32 first;
    // [0, 1] is the tie 1 + 2^-p, which rounds to even (1), not away from zero.
    for (name, dtype, p) in [
        ("lowrank.round_f32", DType::F32, 24),
        ("lowrank.round_f16", DType::F16, 11),
        ("lowrank.round_bf16", DType::BF16, 8),
    ] {
        let half_ulp = (2.0f32).powi(-p);
        let tiny = (2.0f32).powi(-40);
        // V's columns: [1, 2^-p, 2^-40], [1, 2^-p, 0], [0.5, 0, 0].
        let v = vec![1.0, 1.0, 0.5, half_ulp, half_ulp, 0.0, tiny, 0.0, 0.0];
        let u = vec![1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0];
        w.add_tensor(
            name,
            dtype,
            &[3, 3],
            lowrank::encode(
                &lowrank::LowRank {
                    rows: 3,
                    cols: 3,
                    rank: 3,
                    u,
                    v,
                },
                DType::F32,
            ),
        )
        .unwrap();
    }
    // Relative gaps, b = 2, 4 elements, nnz = 1: the bound is 1 + 4 / 3 + 1 = 3 symbols, and
    // this stream has exactly 3: a survivor at 0, then two escapes (§5.7).
    {
        let mut payload = Vec::new();
        encoding::stream::write(
            &[0, 3, 3],
            2,
            encoding::stream::Coding::Packed,
            &mut payload,
        );
        payload.extend(f32_bytes(&[1.5]));
        w.add_tensor(
            "sparse.gaps_at_bound",
            DType::F32,
            &[4],
            encoding::Encoded {
                stages: vec![stage(
                    encoding::StageId::Sparse,
                    sparse_params(Layout::Relative { index_bits: 2 }, 1),
                )],
                payload: Cow::Owned(payload),
            },
        )
        .unwrap();
    }
    // CSR over [3, 0]: a tensor without elements is a 0 x 0 view, so both streams are empty.
    {
        let mut payload = Vec::new();
        encoding::stream::write(&[], 1, encoding::stream::Coding::Packed, &mut payload);
        encoding::stream::write(&[], 1, encoding::stream::Coding::Packed, &mut payload);
        w.add_tensor(
            "sparse.csr_no_columns",
            DType::F32,
            &[3, 0],
            encoding::Encoded {
                stages: vec![stage(
                    encoding::StageId::Sparse,
                    sparse_params(Layout::Csr, 0),
                )],
                payload: Cow::Owned(payload),
            },
        )
        .unwrap();
    }
    // zstd: a frame whose window is exactly 2^27 (no content size), a skippable frame, then a
    // libzstd frame with content size and checksum.
    {
        let first: Vec<u8> = (0..8).collect();
        let second: Vec<u8> = (8..24).collect();
        let mut frames = raw_zstd_frame(&first, 0x00, Some(17 << 3), &[]);
        frames.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
        frames.extend_from_slice(&4u32.to_le_bytes());
        frames.extend_from_slice(b"skip");
        frames.extend(zstd_with_checksum(&second));
        w.add_tensor("zstd.window_2_27", DType::U8, &[24], dense_zstd(frames, 24))
            .unwrap();
    }
    // Names compared byte for byte: "w" and "\u{feff}w" are two names.
    w.add_dense("w", DType::F32, &[1], f32_bytes(&[1.0]))
        .unwrap();
    w.add_dense("\u{feff}w", DType::F32, &[1], f32_bytes(&[2.0]))
        .unwrap();
    finish(&w)
}

/// What a conforming reader must produce for a valid file, as JSON.
pub fn expected_json(bytes: &[u8]) -> Json {
    let file = Cxrm::parse(bytes).expect("valid fixture parses");
    let h = file.header();
    let tensors: Vec<Json> = file
        .tensors()
        .iter()
        .map(|t| {
            let data = file.decode_record(t).expect("valid fixture decodes");
            json!({
                "name": t.name,
                "dtype": t.dtype.name(),
                "shape": t.shape,
                "encoding": t.stages.iter().map(|s| encoding::stage_name(s.code)).collect::<Vec<_>>(),
                "stored_bytes": t.extent.length,
                "values": values_json(&data),
            })
        })
        .collect();
    json!({
        "version": [h.version_major, h.version_minor],
        "metadata": cxrm::format::json::map_to_json(&file.metadata().unwrap()),
        "graph": file.graph().unwrap().map(|g| cxrm::format::json::graph_to_json(&g)),
        "sections": file.sections().iter().map(|s| json!({"kind": s.kind, "required": s.required(), "length": s.extent.length})).collect::<Vec<_>>(),
        "tensors": tensors,
    })
}

/// Decoded values as JSON numbers, exact for every dtype: integers as JSON integers (an i64
/// beyond 2^53 would not survive a trip through f64), floats as the shortest f64 text.
fn values_json(data: &cxrm::TensorData<'_>) -> Json {
    if data.dtype.is_float() {
        return json!(data.to_f64_vec());
    }
    let ints: Vec<i64> = data
        .bytes
        .chunks_exact(data.dtype.size())
        .map(|c| match data.dtype {
            DType::I8 => c[0] as i8 as i64,
            DType::U8 => c[0] as i64,
            DType::I32 => i32::from_le_bytes(c.try_into().unwrap()) as i64,
            _ => i64::from_le_bytes(c.try_into().unwrap()),
        })
        .collect();
    json!(ints)
}

// ---- byte surgery for the invalid fixtures -------------------------------------------------

pub fn fix_header_crc(bytes: &mut [u8]) {
    let table_size = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let end = (HEADER_LEN + table_size).min(bytes.len());
    let crc =
        cxrm::format::container::header::header_crc(&bytes[..HEADER_LEN], &bytes[HEADER_LEN..end]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], at: u64, v: u64) {
    bytes[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
}

/// Offsets of interesting fields in a valid file.
struct Fields {
    /// Per tensor: (record offset, offset of dims[0], offset of stage[0].id, offset of extent).
    tensors: Vec<(u64, u64, u64, u64)>,
    tensor_extents: Vec<(u64, u64)>,
    /// Per section: (entry offset, extent offset, extent length).
    sections: Vec<(u64, u64, u64)>,
}

fn fields(bytes: &[u8]) -> Fields {
    let file = Cxrm::parse(bytes).unwrap();
    let tensors = file
        .tensors()
        .iter()
        .map(|t| {
            let dims = t.record_offset + 2 + t.name.len() as u64 + 2;
            let stage0 = t.stages[0].offset;
            let last = t.stages.last().unwrap();
            let extent = last.offset + 4 + last.params.len() as u64;
            (t.record_offset, dims, stage0, extent)
        })
        .collect();
    Fields {
        tensors,
        tensor_extents: file
            .tensors()
            .iter()
            .map(|t| (t.extent.offset, t.extent.length))
            .collect(),
        sections: file
            .sections()
            .iter()
            .map(|s| (s.entry_offset, s.extent.offset, s.extent.length))
            .collect(),
    }
}

/// A `[4]` f32 tensor stored sparse (relative gaps, b = 2) with nnz 1 but four gap symbols,
/// one more than the bound allows; `coding` overwrites the gap stream's coding byte.
fn gaps_over_bound(coding: Option<u8>) -> Vec<u8> {
    let mut payload = Vec::new();
    encoding::stream::write(
        &[0, 3, 3, 3],
        2,
        encoding::stream::Coding::Packed,
        &mut payload,
    );
    if let Some(c) = coding {
        payload[0] = c;
    }
    payload.extend(f32_bytes(&[1.5]));
    single_tensor(
        DType::F32,
        &[4],
        vec![stage(
            encoding::StageId::Sparse,
            sparse_params(Layout::Relative { index_bits: 2 }, 1),
        )],
        payload,
    )
}

/// A file with metadata `map`, its metadata section then patched by `patch`, with the
/// section's CRC and the header's fixed so that only the patched bytes are wrong.
fn metadata_edit(map: Vec<(&str, Value)>, patch: &dyn Fn(&mut [u8])) -> Vec<u8> {
    let mut w = Writer::new();
    for (k, v) in map {
        w.set_metadata(k, v);
    }
    let mut b = w.to_bytes().unwrap();
    let (entry, off, len) = fields(&b).sections[0];
    patch(&mut b[off as usize..(off + len) as usize]);
    let crc = crc32fast::hash(&b[off as usize..(off + len) as usize]);
    b[entry as usize + 24..entry as usize + 28].copy_from_slice(&crc.to_le_bytes());
    fix_header_crc(&mut b);
    b
}

/// The one way each group of invalid fixtures is listed: `add(name, code, stage, why, bytes)`.
fn adder(
    out: &mut Vec<InvalidFixture>,
) -> impl FnMut(&'static str, &'static str, &'static str, &'static str, Vec<u8>) + '_ {
    move |name, code, stage, why, bytes| {
        out.push(InvalidFixture {
            name,
            bytes,
            code,
            stage,
            why,
        })
    }
}

pub struct InvalidFixture {
    pub name: &'static str,
    pub bytes: Vec<u8>,
    pub code: &'static str,
    /// `open` when parsing must fail, `verify` when only full verification finds it.
    pub stage: &'static str,
    pub why: &'static str,
}

pub fn invalid() -> Vec<InvalidFixture> {
    let mut out = Vec::new();
    let mut add = adder(&mut out);
    let tiny = tiny();
    let tf = fields(&tiny);
    let dtypes = dtypes();
    let df = fields(&dtypes);
    let model = model();
    let mf = fields(&model);
    let zstd = zstd();
    let zf = fields(&zstd);

    let edit = |base: &[u8], f: &dyn Fn(&mut Vec<u8>), fix: bool| {
        let mut b = base.to_vec();
        f(&mut b);
        if fix {
            fix_header_crc(&mut b);
        }
        b
    };

    add("empty_file", "truncated", "open", "zero bytes", Vec::new());
    add(
        "short_header",
        "truncated",
        "open",
        "first 40 bytes of a valid file",
        tiny[..40].to_vec(),
    );
    add(
        "bad_magic",
        "bad_magic",
        "open",
        "magic is CXRN",
        edit(&tiny, &|b| b[3] = b'N', false),
    );
    add(
        "byte_swapped",
        "byte_swapped",
        "open",
        "byte-order mark written big-endian",
        edit(&tiny, &|b| b[4..8].copy_from_slice(&[1, 2, 3, 4]), false),
    );
    add(
        "future_major",
        "unsupported_version",
        "open",
        "version 2.0",
        edit(&tiny, &|b| b[8] = 2, true),
    );
    add(
        "reserved_flags",
        "reserved_nonzero",
        "open",
        "header flag bit 0 set",
        edit(&tiny, &|b| b[12] = 1, true),
    );
    add(
        "truncated",
        "truncated",
        "open",
        "last 10 bytes cut off",
        tiny[..tiny.len() - 10].to_vec(),
    );
    add(
        "trailing_bytes",
        "size_mismatch",
        "open",
        "64 bytes appended",
        edit(&tiny, &|b| b.extend_from_slice(&[0; 64]), false),
    );
    add(
        "table_past_end",
        "out_of_bounds",
        "open",
        "table_size points past the end of the file",
        edit(&tiny, &|b| put_u64(b, 32, 4096), true),
    );
    add(
        "table_too_large",
        "limit_exceeded",
        "open",
        "table_size of 2^40",
        edit(&tiny, &|b| put_u64(b, 32, 1 << 40), true),
    );
    add(
        "header_crc",
        "crc_mismatch",
        "open",
        "tensor name changed without updating header_crc",
        edit(&tiny, &|b| b[tf.tensors[0].0 as usize + 2] = b'v', false),
    );
    add(
        "table_padding",
        "nonzero_padding",
        "open",
        "nonzero byte between table and data",
        edit(
            &tiny,
            &|b| {
                let table_end = 64 + u64::from_le_bytes(b[32..40].try_into().unwrap()) as usize;
                b[table_end + 1] = 1;
            },
            false,
        ),
    );
    add(
        "huge_tensor_count",
        "limit_exceeded",
        "open",
        "tensor_count = 2^32-1",
        edit(
            &tiny,
            &|b| b[68..72].copy_from_slice(&u32::MAX.to_le_bytes()),
            true,
        ),
    );
    add(
        "count_overflow",
        "limit_exceeded",
        "open",
        "dims 2^32 x 2^32 overflow the element count",
        edit(
            &dtypes,
            &|b| {
                put_u64(b, df.tensors[0].1, 1 << 32);
                put_u64(b, df.tensors[0].1 + 8, 1 << 32);
            },
            true,
        ),
    );
    add(
        "bad_dtype",
        "bad_dtype",
        "open",
        "dtype code 99",
        edit(&tiny, &|b| b[tf.tensors[0].1 as usize - 2] = 99, true),
    );
    add(
        "overlapping_extents",
        "bad_layout",
        "open",
        "second tensor's extent starts where the first's does",
        edit(
            &dtypes,
            &|b| {
                put_u64(b, df.tensors[1].3, df.tensor_extents[0].0);
            },
            true,
        ),
    );
    add(
        "misaligned_extent",
        "bad_layout",
        "open",
        "extent offset not a multiple of 64",
        edit(
            &tiny,
            &|b| {
                put_u64(b, tf.tensors[0].3, tf.tensor_extents[0].0 + 4);
            },
            true,
        ),
    );
    add(
        "extent_past_end",
        "out_of_bounds",
        "open",
        "extent length runs past the end of the file",
        edit(
            &tiny,
            &|b| {
                put_u64(b, tf.tensors[0].3 + 8, 1 << 20);
            },
            true,
        ),
    );
    add(
        "unknown_encoding",
        "unknown_encoding",
        "open",
        "tensor uses stage id 42, listed in must_understand",
        edit(
            &tiny,
            &|b| {
                b[tf.tensors[0].2 as usize] = 42;
                put_u64(b, 16, 1 << 42);
            },
            true,
        ),
    );
    add(
        "must_understand_mismatch",
        "bad_chain",
        "open",
        "must_understand omits dense, which a tensor uses",
        edit(&tiny, &|b| put_u64(b, 16, 0), true),
    );
    add(
        "byte_stage_first",
        "bad_chain",
        "open",
        "chain starts with zstd, a byte stage",
        edit(
            &tiny,
            &|b| {
                b[tf.tensors[0].2 as usize] = 1;
                put_u64(b, 16, 2);
            },
            true,
        ),
    );
    add(
        "stage_params_too_long",
        "limit_exceeded",
        "open",
        "param_len 5000",
        edit(
            &tiny,
            &|b| {
                let at = tf.tensors[0].2 as usize + 2;
                b[at..at + 2].copy_from_slice(&5000u16.to_le_bytes());
            },
            true,
        ),
    );
    add(
        "duplicate_name",
        "duplicate_name",
        "open",
        "two tensors named t_f32",
        edit(
            &dtypes,
            &|b| {
                let at = df.tensors[1].0 as usize + 2;
                b[at..at + 5].copy_from_slice(b"t_f32");
            },
            true,
        ),
    );
    add(
        "bad_utf8_name",
        "bad_utf8",
        "open",
        "tensor name is the byte 0xff",
        edit(&tiny, &|b| b[tf.tensors[0].0 as usize + 2] = 0xff, true),
    );
    add(
        "unknown_required_section",
        "unknown_section",
        "open",
        "section kind 1000 marked required",
        {
            let mut w = Writer::new();
            w.add_raw_section(1000, true, b"must be understood".to_vec())
                .unwrap();
            w.add_dense("w", DType::F32, &[1], f32_bytes(&[1.0]))
                .unwrap();
            w.to_bytes().unwrap()
        },
    );
    add(
        "duplicate_section",
        "duplicate_section",
        "open",
        "two metadata sections",
        edit(
            &model,
            &|b| {
                // The graph section entry becomes a second metadata section.
                b[mf.sections[1].0 as usize] = 1;
            },
            true,
        ),
    );
    add(
        "payload_crc",
        "crc_mismatch",
        "verify",
        "one payload byte changed",
        edit(
            &tiny,
            &|b| b[tf.tensor_extents[0].0 as usize] ^= 0x40,
            false,
        ),
    );
    add(
        "extent_padding",
        "nonzero_padding",
        "verify",
        "nonzero byte in the padding between extents",
        edit(
            &tiny,
            &|b| b[tf.tensor_extents[0].0 as usize - 1] = 7,
            false,
        ),
    );
    add(
        "zstd_wrong_length",
        "decode_error",
        "verify",
        "zstd decoded_len one byte more than the stream holds",
        edit(
            &zstd,
            &|b| {
                let at = zf.tensors[0].3 as usize - 8;
                let v = u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) + 1;
                b[at..at + 8].copy_from_slice(&v.to_le_bytes());
            },
            true,
        ),
    );
    add(
        "graph_missing_tensor",
        "bad_graph",
        "verify",
        "graph names a tensor the file lacks",
        {
            let mut b = model.clone();
            let (entry, off, len) = mf.sections[1];
            let range = off as usize..(off + len) as usize;
            let at = b[range.clone()]
                .windows(7)
                .position(|w| w == b"fc.bias")
                .unwrap()
                + off as usize;
            b[at..at + 7].copy_from_slice(b"fc.bais");
            let crc = crc32fast::hash(&b[range]);
            b[entry as usize + 24..entry as usize + 28].copy_from_slice(&crc.to_le_bytes());
            fix_header_crc(&mut b);
            b
        },
    );
    add(
        "table_offset",
        "out_of_bounds",
        "open",
        "table_offset is 65, not 64",
        edit(&tiny, &|b| put_u64(b, 24, 65), true),
    );
    add(
        "dim_too_large",
        "limit_exceeded",
        "open",
        "dims [0, 2^50]: a zero dimension does not excuse a huge one",
        edit(
            &dtypes,
            &|b| {
                let empty = df.tensors.len() - 1;
                put_u64(b, df.tensors[empty].1 + 8, 1 << 50);
            },
            true,
        ),
    );
    add(
        "reserved_stage_misplaced",
        "bad_chain",
        "open",
        "chain starts with huffman (id 4), an entropy stage that needs sparse or codebook before it",
        edit(
            &tiny,
            &|b| {
                b[tf.tensors[0].2 as usize] = 4;
                put_u64(b, 16, 1 << 4);
            },
            true,
        ),
    );
    add(
        "dense_wrong_length",
        "size_mismatch",
        "verify",
        "shape [3] but 8 bytes of dense f32",
        edit(&tiny, &|b| put_u64(b, tf.tensors[0].1, 3), true),
    );
    add(
        "zstd_empty",
        "decode_error",
        "verify",
        "a zstd stage with no frame at all",
        {
            let mut w = Writer::new();
            let enc = encoding::Encoded {
                stages: vec![
                    encoding::StageSpec {
                        id: encoding::StageId::Dense,
                        params: vec![],
                    },
                    encoding::StageSpec {
                        id: encoding::StageId::Zstd,
                        params: 0u64.to_le_bytes().to_vec(),
                    },
                ],
                payload: Cow::Borrowed(&[]),
            };
            w.add_tensor("nothing", DType::F32, &[0], enc).unwrap();
            w.to_bytes().unwrap()
        },
    );
    add(
        "zstd_params_length",
        "bad_chain",
        "verify",
        "zstd stage with 7 parameter bytes instead of 8",
        {
            let mut w = Writer::new();
            let enc = encoding::Encoded {
                stages: vec![
                    encoding::StageSpec {
                        id: encoding::StageId::Dense,
                        params: vec![],
                    },
                    encoding::StageSpec {
                        id: encoding::StageId::Zstd,
                        params: vec![4, 0, 0, 0, 0, 0, 0],
                    },
                ],
                payload: Cow::Owned(::zstd::bulk::compress(&[0u8; 4], 3).unwrap()),
            };
            w.add_tensor("w", DType::F32, &[1], enc).unwrap();
            w.to_bytes().unwrap()
        },
    );
    add(
        "duplicate_key",
        "duplicate_key",
        "verify",
        "metadata key ka twice",
        metadata_edit(vec![("ka", Value::Int(1)), ("kb", Value::Int(2))], &|m| {
            let at = m.windows(2).position(|w| w == b"kb").unwrap();
            m[at + 1] = b'a';
        }),
    );
    add(
        "metadata_bad_utf8",
        "bad_utf8",
        "verify",
        "metadata string holding the byte 0xff",
        metadata_edit(vec![("k", Value::String("abc".into()))], &|m| {
            let n = m.len();
            m[n - 1] = 0xff;
        }),
    );
    add(
        "metadata_bad_bool",
        "bad_value",
        "verify",
        "a metadata bool stored as 2",
        metadata_edit(vec![("flag", Value::Bool(true))], &|m| {
            let n = m.len();
            m[n - 1] = 2;
        }),
    );
    add(
        "metadata_overrun",
        "truncated",
        "verify",
        "metadata string length runs past the section",
        metadata_edit(vec![("k", Value::String("abc".into()))], &|m| {
            let n = m.len();
            m[n - 7..n - 3].copy_from_slice(&1000u32.to_le_bytes());
        }),
    );
    // The groups below list into `out` themselves.
    drop(add);
    deep_invalid(&mut out);
    factored_invalid(&mut out);
    miracle_invalid(&mut out);
    hashed_invalid(&mut out);
    corner_invalid(&mut out);
    out
}

/// MIRACLE's rules (spec §5.12): each parameter out of range, and payloads of the wrong size.
fn miracle_invalid(out: &mut Vec<InvalidFixture>) {
    use encoding::StageId::Miracle;
    use encoding::miracle::Params;
    let mut add = adder(out);
    let params = |blocks: u32, index_bits: u8, prior_sigma: f32| {
        Params {
            seed: 7,
            blocks,
            index_bits,
            prior_sigma,
        }
        .to_bytes()
    };
    // Three blocks of 5 bits: 15 bits, two bytes.
    let one = |p: Vec<u8>, payload: Vec<u8>| {
        single_tensor(DType::F32, &[2, 3], vec![stage(Miracle, p)], payload)
    };
    add(
        "miracle_index_bits_zero",
        "bad_chain",
        "verify",
        "index_bits 0: each block's index takes 1 to 32 bits",
        one(params(3, 0, 0.5), vec![]),
    );
    add(
        "miracle_index_bits_past_32",
        "bad_chain",
        "verify",
        "index_bits 33: wider than the stage allows",
        one(params(3, 33, 0.5), vec![0; 13]),
    );
    add(
        "miracle_no_blocks",
        "bad_chain",
        "verify",
        "0 blocks for 6 elements: the blocks do not cover the tensor",
        one(params(0, 5, 0.5), vec![]),
    );
    add(
        "miracle_more_blocks_than_elements",
        "bad_chain",
        "verify",
        "7 blocks for 6 elements: a block would be empty",
        one(params(7, 5, 0.5), vec![0; 5]),
    );
    add(
        "miracle_sigma_zero",
        "bad_chain",
        "verify",
        "prior_sigma 0: the prior's σ must be finite and positive",
        one(params(3, 5, 0.0), vec![0; 2]),
    );
    add(
        "miracle_sigma_nan",
        "bad_chain",
        "verify",
        "prior_sigma NaN",
        one(params(3, 5, f32::NAN), vec![0; 2]),
    );
    add(
        "miracle_reserved",
        "reserved_nonzero",
        "verify",
        "a reserved parameter byte is 1",
        one(
            {
                let mut p = params(3, 5, 0.5);
                p[13] = 1;
                p
            },
            vec![0; 2],
        ),
    );
    add(
        "miracle_on_int",
        "bad_chain",
        "verify",
        "miracle on an i32 tensor: its values are real",
        single_tensor(
            DType::I32,
            &[2, 3],
            vec![stage(Miracle, params(3, 5, 0.5))],
            vec![0; 2],
        ),
    );
    add(
        "miracle_short_payload",
        "truncated",
        "verify",
        "three 5-bit indices need 2 bytes, the payload holds 1",
        one(params(3, 5, 0.5), vec![0xff]),
    );
    add(
        "miracle_left_over",
        "decode_error",
        "verify",
        "three 5-bit indices need 2 bytes, the payload holds 3",
        one(params(3, 5, 0.5), vec![0, 0, 0]),
    );
    add(
        "miracle_padding",
        "decode_error",
        "verify",
        "the last bit after three 5-bit indices is 1",
        one(params(3, 5, 0.5), vec![0, 1]),
    );
}

/// `hashed`'s rules (spec §5.13): the shared values against the tensor, the stage that must
/// follow, and the miracle stage judged against the shared values rather than the elements.
fn hashed_invalid(out: &mut Vec<InvalidFixture>) {
    use encoding::StageId::{Dense, Hashed, Miracle};
    use encoding::hashed::Params as Shared;
    use encoding::miracle::Params;
    let mut add = adder(out);
    let shared = |values: u32| Shared { seed: 9, values }.to_bytes();
    let coded = |blocks: u32| {
        Params {
            seed: 7,
            blocks,
            index_bits: 5,
            prior_sigma: 0.5,
        }
        .to_bytes()
    };
    // Six elements sharing three values in three blocks of 5 bits: two bytes.
    let one = |stages: Vec<(encoding::StageId, Vec<u8>)>, payload: Vec<u8>| {
        single_tensor(
            DType::F32,
            &[2, 3],
            stages.into_iter().map(|(id, p)| stage(id, p)).collect(),
            payload,
        )
    };
    add(
        "hashed_no_values",
        "bad_chain",
        "verify",
        "0 shared values for 6 elements",
        one(vec![(Hashed, shared(0)), (Miracle, coded(3))], vec![0; 2]),
    );
    add(
        "hashed_more_values_than_elements",
        "bad_chain",
        "verify",
        "7 shared values for 6 elements: a value no element uses",
        one(vec![(Hashed, shared(7)), (Miracle, coded(3))], vec![0; 2]),
    );
    add(
        "hashed_reserved",
        "reserved_nonzero",
        "verify",
        "a reserved parameter byte is 1",
        one(
            vec![
                (Hashed, {
                    let mut p = shared(3);
                    p[12] = 1;
                    p
                }),
                (Miracle, coded(3)),
            ],
            vec![0; 2],
        ),
    );
    // A writer refuses to break the grammar: a valid file, its second stage's id edited.
    let valid = one(vec![(Hashed, shared(3)), (Miracle, coded(3))], vec![0; 2]);
    let second_id = fields(&valid).tensors[0].2 + 4 + encoding::hashed::PARAMS_LEN as u64;
    let mut then_dense = valid.clone();
    then_dense[second_id as usize] = Dense as u8;
    put_u64(
        &mut then_dense,
        16,
        (1 << Hashed as u8) | (1 << Dense as u8),
    );
    fix_header_crc(&mut then_dense);
    add(
        "hashed_then_dense",
        "bad_chain",
        "open",
        "hashed followed by dense: only miracle codes the shared values",
        then_dense,
    );
    add(
        "hashed_blocks_past_values",
        "bad_chain",
        "verify",
        "4 blocks for 3 shared values: the blocks count the values, not the 6 elements",
        one(vec![(Hashed, shared(3)), (Miracle, coded(4))], vec![0; 3]),
    );
    add(
        "hashed_on_int",
        "bad_chain",
        "verify",
        "hashed on an i32 tensor: its values are real",
        single_tensor(
            DType::I32,
            &[2, 3],
            vec![stage(Hashed, shared(3)), stage(Miracle, coded(3))],
            vec![0; 2],
        ),
    );
    add(
        "hashed_short_payload",
        "truncated",
        "verify",
        "three 5-bit indices need 2 bytes, the payload holds 1",
        one(vec![(Hashed, shared(3)), (Miracle, coded(3))], vec![0]),
    );
}

/// Bad files on which two readings of the spec would report different errors, or one would
/// accept the file: each names the rule the spec fixes.
fn corner_invalid(out: &mut Vec<InvalidFixture>) {
    use encoding::StageId::LowRank;
    let mut add = adder(out);
    let one_u8_tensor = |name: &str, enc: encoding::Encoded<'static>, n: u64| {
        let mut w = Writer::new();
        w.add_tensor(name, DType::U8, &[n], enc).unwrap();
        w.to_bytes().unwrap()
    };
    let data: Vec<u8> = (0..100).collect();

    // §5.2: libzstd verifies checksums and content sizes, and so must every reader.
    add(
        "zstd_bad_checksum",
        "decode_error",
        "verify",
        "a zstd frame whose content checksum does not match its content",
        {
            let mut frame = zstd_with_checksum(&data);
            *frame.last_mut().unwrap() ^= 1;
            one_u8_tensor("t", dense_zstd(frame, 100), 100)
        },
    );
    add(
        "zstd_content_size_mismatch",
        "decode_error",
        "verify",
        "a zstd frame declaring 99 content bytes whose block holds 100 (decoded_len 100)",
        one_u8_tensor(
            "t",
            dense_zstd(raw_zstd_frame(&data, 0x20, None, &[99]), 100),
            100,
        ),
    );
    add(
        "zstd_window_too_large",
        "decode_error",
        "verify",
        "a 16-byte zstd frame with its content size whose window is 2^27 + 2^24",
        one_u8_tensor(
            "t",
            dense_zstd(
                raw_zstd_frame(&data[..16], 0x80, Some(17 << 3 | 1), &16u32.to_le_bytes()),
                16,
            ),
            16,
        ),
    );

    // The map: count (4), key_len (2), "a", type 5, element type, count (4), elements.
    add(
        "metadata_array_count_overrun",
        "bad_value",
        "verify",
        "bool array of count 3 with 2 bytes left, the second a 2: elements are read one by one",
        metadata_edit(
            vec![(
                "a",
                Value::Array(ValueType::Bool, vec![Value::Bool(true); 2]),
            )],
            &|m| {
                m[9..13].copy_from_slice(&3u32.to_le_bytes());
                m[14] = 2;
            },
        ),
    );
    add(
        "metadata_empty_array_bad_type",
        "bad_value",
        "verify",
        "an empty array of element type 9",
        metadata_edit(vec![("a", Value::Array(ValueType::Int, vec![]))], &|m| {
            m[8] = 9
        }),
    );
    add(
        "metadata_array_type_before_count",
        "bad_value",
        "verify",
        "array element type 9 with count 2^32 - 1: the type is judged before the count",
        metadata_edit(vec![("a", Value::Array(ValueType::Int, vec![]))], &|m| {
            m[8] = 9;
            m[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
        }),
    );

    // §5.9: no rank fits a tensor without elements.
    let lr1 = encoding::lowrank::Params {
        rank: 1,
        factor_dtype: DType::F32,
    }
    .to_bytes();
    add(
        "lowrank_no_elements",
        "bad_chain",
        "verify",
        "lowrank rank 1 on a [2, 0] tensor (a 2 x 0 matrix: min(rows, cols) = 0)",
        single_tensor(
            DType::F32,
            &[2, 0],
            vec![stage(LowRank, lr1.clone())],
            f32_bytes(&[0.5; 2]),
        ),
    );
    // §5.7: the bound on a relative gap stream's count is inclusive; one more is too many.
    add(
        "sparse_gaps_over_bound",
        "decode_error",
        "verify",
        "4 gap symbols for nnz 1 in 4 elements at b = 2 (the bound is 1 + 4 / 3 + 1 = 3)",
        gaps_over_bound(None),
    );

    add(
        "stream_coding_before_count",
        "bad_value",
        "verify",
        "gap stream of coding 7 whose count is also over its bound: the coding is judged first",
        gaps_over_bound(Some(7)),
    );
    // §5.4: a uleb128 in its shortest form only.
    add(
        "uleb128_not_shortest",
        "decode_error",
        "verify",
        "an index stream whose count 4 is stored as 84 00",
        {
            let mut payload = centroids(&[0.0, 1.0]);
            payload.extend_from_slice(&[0, 1, 0x84, 0x00, 1, 0b1010_0000]);
            single_tensor(
                DType::F32,
                &[4],
                vec![stage(encoding::StageId::Codebook, cb_params(1, 2))],
                payload,
            )
        },
    );

    // §3: a section entry and a tensor's extent are read whole before they are checked.
    let tiny = tiny();
    let tf = fields(&tiny);
    let cut_table = |at: usize, patch: &dyn Fn(&mut Vec<u8>)| {
        let mut b = tiny.clone();
        patch(&mut b);
        // The header stays consistent: table_size, data_offset and zero padding after the cut.
        let data_offset = at.div_ceil(64) * 64;
        put_u64(&mut b, 32, at as u64 - 64);
        put_u64(&mut b, 40, data_offset as u64);
        b[at..data_offset].fill(0);
        fix_header_crc(&mut b);
        b
    };
    add(
        "table_cut_in_section_entry",
        "truncated",
        "open",
        "table ends inside a section entry whose flags are 2: the entry is read whole first",
        cut_table(tf.sections[0].0 as usize + 30, &|b| {
            b[tf.sections[0].0 as usize + 4] = 2;
        }),
    );
    add(
        "table_cut_in_extent",
        "truncated",
        "open",
        "table ends inside a tensor's crc32 after a misaligned offset: the extent is read whole first",
        cut_table(tf.tensors[0].3 as usize + 18, &|b| {
            put_u64(b, tf.tensors[0].3, tf.tensor_extents[0].0 + 4);
        }),
    );

    // §10: duplicate names and sections, and unknown required sections, are judged after the
    // whole table, so a later record's error comes first.
    let dtypes = dtypes();
    let df = fields(&dtypes);
    let last_dtype = |b: &mut Vec<u8>| {
        let last = df.tensors.len() - 1;
        b[df.tensors[last].1 as usize - 2] = 99;
    };
    add(
        "duplicate_name_deferred",
        "bad_dtype",
        "open",
        "two tensors named t_f32, then a later tensor of dtype 99",
        {
            let mut b = dtypes.clone();
            let at = df.tensors[1].0 as usize + 2;
            b[at..at + 5].copy_from_slice(b"t_f32");
            last_dtype(&mut b);
            fix_header_crc(&mut b);
            b
        },
    );
    add(
        "unknown_section_deferred",
        "bad_dtype",
        "open",
        "a required section of unknown kind 1000, then a tensor of dtype 99",
        {
            let mut w = Writer::new();
            // Written optional, so that `fields` can read it, then marked required.
            w.add_raw_section(1000, false, b"must be understood".to_vec())
                .unwrap();
            w.add_dense("w", DType::F32, &[1], f32_bytes(&[1.0]))
                .unwrap();
            let mut b = w.to_bytes().unwrap();
            let f = fields(&b);
            b[f.sections[0].0 as usize + 4] = 1;
            b[f.tensors[0].1 as usize - 2] = 99;
            fix_header_crc(&mut b);
            b
        },
    );
    let model = model();
    let mf = fields(&model);
    add(
        "duplicate_section_deferred",
        "bad_dtype",
        "open",
        "two metadata sections, then a tensor of dtype 99",
        {
            let mut b = model.clone();
            b[mf.sections[1].0 as usize] = 1;
            b[mf.tensors[0].1 as usize - 2] = 99;
            fix_header_crc(&mut b);
            b
        },
    );
    // §2: data_offset is align64(64 + table_size) exactly. Here it is 64 bytes later, over zero
    // padding, with no extents: a reader that skips this check finds nothing else wrong.
    add(
        "data_offset_late",
        "bad_layout",
        "open",
        "data_offset one multiple of 64 past align64(64 + table_size), the gap zero-filled, no \
         extents: only the data_offset check itself rejects it",
        {
            let mut b = empty();
            let data_offset = u64::from_le_bytes(b[40..48].try_into().unwrap());
            b.extend_from_slice(&[0u8; 64]);
            put_u64(&mut b, 40, data_offset + 64);
            let len = b.len() as u64;
            put_u64(&mut b, 48, len);
            fix_header_crc(&mut b);
            b
        },
    );
    // §3.3: an extent starts at align64(cursor) exactly, not at any later multiple of 64.
    add(
        "extent_gap",
        "bad_layout",
        "open",
        "64 zero bytes before the tensor's extent, which starts one multiple of 64 late",
        {
            let mut b = tiny.clone();
            let at = tf.tensor_extents[0].0 as usize;
            b.splice(at..at, [0u8; 64]);
            put_u64(&mut b, tf.tensors[0].3, at as u64 + 64);
            let len = b.len() as u64;
            put_u64(&mut b, 48, len);
            fix_header_crc(&mut b);
            b
        },
    );
}

fn single_tensor(
    dtype: DType,
    shape: &[u64],
    stages: Vec<encoding::StageSpec>,
    payload: Vec<u8>,
) -> Vec<u8> {
    let mut w = Writer::new();
    w.add_tensor(
        "t",
        dtype,
        shape,
        encoding::Encoded {
            stages,
            payload: Cow::Owned(payload),
        },
    )
    .unwrap();
    w.to_bytes().unwrap()
}

fn stage(id: encoding::StageId, params: Vec<u8>) -> encoding::StageSpec {
    encoding::StageSpec { id, params }
}

fn cb_params(bits: u8, k: u16) -> Vec<u8> {
    encoding::codebook::Params {
        bits,
        centroid_dtype: DType::F32,
        k,
    }
    .to_bytes()
}

fn sparse_params(layout: Layout, nnz: u64) -> Vec<u8> {
    encoding::sparse::Params { layout, nnz }.to_bytes()
}

fn centroids(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Bad files for the factored stages (spec §5.8–§5.11), each breaking one rule with every CRC
/// correct.
fn factored_invalid(out: &mut Vec<InvalidFixture>) {
    use encoding::StageId::{Binary, Huffman, LowRank, Tucker};
    use encoding::{binary, lowrank, tucker};
    let mut add = adder(out);
    let f32s = |n: usize| f32_bytes(&vec![0.5; n]);
    let lr = |rank: u32| {
        lowrank::Params {
            rank,
            factor_dtype: DType::F32,
        }
        .to_bytes()
    };
    add(
        "lowrank_rank_too_large",
        "bad_chain",
        "verify",
        "rank 3 for a 2 x 4 matrix (at most min(rows, cols) = 2)",
        single_tensor(DType::F32, &[2, 4], vec![stage(LowRank, lr(3))], f32s(18)),
    );
    add(
        "lowrank_on_vector",
        "bad_chain",
        "verify",
        "lowrank on a rank-1 tensor",
        single_tensor(DType::F32, &[4], vec![stage(LowRank, lr(1))], f32s(5)),
    );
    add(
        "lowrank_short_payload",
        "truncated",
        "verify",
        "rank 1 of 2 x 4 needs 2 + 4 factor values, the payload holds 5",
        single_tensor(DType::F32, &[2, 4], vec![stage(LowRank, lr(1))], f32s(5)),
    );
    add(
        "lowrank_left_over",
        "decode_error",
        "verify",
        "rank 1 of 2 x 4 needs 6 factor values, the payload holds 7",
        single_tensor(DType::F32, &[2, 4], vec![stage(LowRank, lr(1))], f32s(7)),
    );
    add(
        "lowrank_factor_dtype",
        "bad_chain",
        "verify",
        "factor dtype 3 (bf16): factors are f32 or f16",
        {
            let mut p = lr(1);
            p[4] = 3;
            single_tensor(DType::F32, &[2, 4], vec![stage(LowRank, p)], f32s(6))
        },
    );
    add(
        "lowrank_then_huffman",
        "bad_chain",
        "open",
        "huffman after lowrank, which has no symbol streams",
        {
            // The writer refuses this chain, so write lowrank+zstd and turn zstd into huffman.
            let lowrank = lowrank::encode(
                &lowrank::LowRank {
                    rows: 2,
                    cols: 4,
                    rank: 1,
                    u: vec![0.5; 2],
                    v: vec![0.5; 4],
                },
                DType::F32,
            );
            let mut w = Writer::new();
            w.add_tensor(
                "t",
                DType::F32,
                &[2, 4],
                encoding::zstd::encode(lowrank, 1).unwrap(),
            )
            .unwrap();
            let mut b = w.to_bytes().unwrap();
            let stage1 = fields(&b).tensors[0].2 as usize + 4 + lowrank::PARAMS_LEN;
            assert_eq!(b[stage1], encoding::StageId::Zstd as u8, "zstd kept");
            b[stage1] = Huffman as u8;
            put_u64(&mut b, 16, 1 << LowRank as u8 | 1 << Huffman as u8);
            fix_header_crc(&mut b);
            b
        },
    );
    add(
        "tucker_rank_too_large",
        "bad_chain",
        "verify",
        "rank_in 3 for a [2, 2, 3] tensor (at most min(I, O·S) = 2)",
        single_tensor(
            DType::F32,
            &[2, 2, 3],
            vec![stage(
                Tucker,
                tucker::Params {
                    rank_out: 1,
                    rank_in: 3,
                    factor_dtype: DType::F32,
                }
                .to_bytes(),
            )],
            f32s(2 + 9 + 6),
        ),
    );
    let bin_params = binary::Params {
        scale_dtype: DType::F32,
    }
    .to_bytes();
    add(
        "binary_nonzero_padding",
        "decode_error",
        "verify",
        "a 1 x 3 binary tensor whose sign byte sets a padding bit",
        {
            let mut payload = f32_bytes(&[0.5]);
            payload.push(0b1010_0001);
            single_tensor(
                DType::F32,
                &[1, 3],
                vec![stage(Binary, bin_params.clone())],
                payload,
            )
        },
    );
    add(
        "binary_reserved",
        "reserved_nonzero",
        "verify",
        "a nonzero reserved byte in binary's parameters",
        {
            let mut p = bin_params.clone();
            p[3] = 1;
            let mut payload = f32_bytes(&[0.5]);
            payload.push(0b1010_0000);
            single_tensor(DType::F32, &[1, 3], vec![stage(Binary, p)], payload)
        },
    );
    add(
        "binary_on_integers",
        "bad_chain",
        "verify",
        "binary on an i32 tensor: its scales are real",
        {
            let mut payload = f32_bytes(&[0.5]);
            payload.push(0b1010_0000);
            single_tensor(
                DType::I32,
                &[1, 3],
                vec![stage(Binary, bin_params.clone())],
                payload,
            )
        },
    );
}

/// Bad files for the Deep Compression stages: each builds a small tensor whose payload breaks
/// one rule of spec §5.3–§5.7, with every CRC correct so that the rule itself is what fails.
fn deep_invalid(out: &mut Vec<InvalidFixture>) {
    use encoding::StageId::{Codebook, Huffman, Sparse};
    use encoding::stream::{Coding, write as stream};
    let mut add = adder(out);
    let rel5 = Layout::Relative { index_bits: 5 };

    // A codebook+huffman tensor over 4 centroids whose index stream uses the given lengths.
    let indices: Vec<u16> = (0..40u16)
        .map(|i| [0, 0, 0, 1, 1, 2, 3][i as usize % 7])
        .collect();
    // A codebook+huffman tensor of 40 elements: four centroids, then `index_stream`.
    let codebook_huffman = |index_stream: &[u8]| {
        let mut payload = centroids(&[-1.0, -0.5, 0.5, 1.0]);
        payload.extend_from_slice(index_stream);
        single_tensor(
            DType::F32,
            &[40],
            vec![stage(Codebook, cb_params(2, 4)), stage(Huffman, vec![])],
            payload,
        )
    };
    let huffman_tensor = |lengths: &[u8]| {
        let mut stream = Vec::new();
        encoding::stream::write_huffman(&indices, 2, lengths, &mut stream);
        codebook_huffman(&stream)
    };
    add(
        "huffman_oversubscribed",
        "decode_error",
        "verify",
        "code lengths 1,1,1,1: more codes than a prefix code can hold",
        huffman_tensor(&[1, 1, 1, 1]),
    );
    add(
        "huffman_incomplete",
        "decode_error",
        "verify",
        "code lengths 1,2,3,4: a prefix code with unused room",
        huffman_tensor(&[1, 2, 3, 4]),
    );
    add(
        "huffman_too_long",
        "decode_error",
        "verify",
        "a code length of 25",
        huffman_tensor(&[25, 1, 2, 3]),
    );
    // A codebook+huffman tensor of 40 elements whose index stream is written by hand: the
    // stored code lengths (each in `len_bits` bits) and then exactly `bits` as the bit stream.
    let raw_huffman_tensor = |lengths: &[u8], len_bits: u8, bits: &[u8]| {
        let mut data = Vec::new();
        encoding::stream::write_uleb128(lengths.len() as u64, &mut data);
        data.push(len_bits);
        let mut packed = 0u64;
        let mut used = 0u32;
        for &l in lengths {
            packed = (packed << len_bits) | l as u64;
            used += len_bits as u32;
        }
        let bytes = used.div_ceil(8);
        packed <<= bytes * 8 - used;
        for k in (0..bytes).rev() {
            data.push((packed >> (8 * k)) as u8);
        }
        data.extend_from_slice(bits);
        let mut stream = vec![2, 2]; // coding: Huffman; width
        encoding::stream::write_uleb128(40, &mut stream);
        encoding::stream::write_uleb128(data.len() as u64, &mut stream);
        stream.extend_from_slice(&data);
        codebook_huffman(&stream)
    };
    add(
        "huffman_single_symbol_length_2",
        "decode_error",
        "verify",
        "one symbol with code length 2 (it MUST be 1), and 80 bits of its code \"00\": a reader \
         that treats one symbol like many decodes 40 zeros",
        raw_huffman_tensor(&[2], 2, &[0; 10]),
    );
    add(
        "huffman_single_symbol_with_bits",
        "decode_error",
        "verify",
        "one symbol of length 1 whose bit stream is not empty (40 bits of \"0\"): a lone symbol \
         MUST cost no bits",
        raw_huffman_tensor(&[1], 1, &[0; 5]),
    );
    add(
        "huffman_trailing_byte",
        "decode_error",
        "verify",
        "codes 0 and 1 of length 1 for 40 symbols (5 bytes of bits), then one more byte: the bit \
         stream MUST be exactly ceil(bits / 8) bytes",
        raw_huffman_tensor(&[1, 1], 1, &[0; 6]),
    );
    add(
        "huffman_bad_padding",
        "decode_error",
        "verify",
        "a nonzero padding bit after the last code",
        {
            let mut payload = centroids(&[-1.0, -0.5, 0.5, 1.0]);
            encoding::stream::write_huffman(&[0, 1, 2], 2, &[1, 2, 2], &mut payload);
            // "0" "10" "11" = 5 bits, then 3 padding bits: set the last one.
            let last = payload.len() - 1;
            payload[last] |= 1;
            single_tensor(
                DType::F32,
                &[3],
                vec![stage(Codebook, cb_params(2, 4)), stage(Huffman, vec![])],
                payload,
            )
        },
    );
    add(
        "huffman_without_stage",
        "bad_chain",
        "verify",
        "a Huffman-coded stream in a chain without the huffman stage",
        {
            let mut payload = centroids(&[-1.0, -0.5, 0.5, 1.0]);
            stream(&indices, 2, Coding::Huffman, &mut payload);
            single_tensor(
                DType::F32,
                &[40],
                vec![stage(Codebook, cb_params(2, 4))],
                payload,
            )
        },
    );
    add(
        "index_past_codebook",
        "decode_error",
        "verify",
        "index 3 with only 3 centroids",
        {
            let mut payload = centroids(&[-1.0, 0.0, 1.0]);
            stream(&[0, 1, 2, 3], 2, Coding::Packed, &mut payload);
            single_tensor(
                DType::F32,
                &[4],
                vec![stage(Codebook, cb_params(2, 3))],
                payload,
            )
        },
    );
    add(
        "codebook_on_integers",
        "bad_chain",
        "verify",
        "a codebook on an i32 tensor",
        {
            let mut payload = centroids(&[1.0, 2.0]);
            stream(&[0, 1], 1, Coding::Packed, &mut payload);
            single_tensor(
                DType::I32,
                &[2],
                vec![stage(Codebook, cb_params(1, 2))],
                payload,
            )
        },
    );
    add(
        "codebook_bad_params",
        "bad_chain",
        "verify",
        "codebook with k = 5 centroids for 2-bit indices",
        {
            let mut payload = centroids(&[0.0, 1.0, 2.0, 3.0, 4.0]);
            stream(&[0, 1], 2, Coding::Packed, &mut payload);
            single_tensor(
                DType::F32,
                &[2],
                vec![stage(Codebook, cb_params(2, 5))],
                payload,
            )
        },
    );
    add(
        "stream_truncated",
        "truncated",
        "verify",
        "a stream's data_len runs past the payload",
        {
            let mut payload = centroids(&[0.0, 1.0]);
            stream(&[0, 1, 1, 0], 1, Coding::Packed, &mut payload);
            // centroids (8 bytes), coding, width, count = 4, then data_len = 1: make it 2.
            assert_eq!(payload[11], 1);
            payload[11] = 2;
            single_tensor(
                DType::F32,
                &[4],
                vec![stage(Codebook, cb_params(1, 2))],
                payload,
            )
        },
    );
    add(
        "stream_width_mismatch",
        "decode_error",
        "verify",
        "index stream of width 3 under a 2-bit codebook",
        {
            let mut payload = centroids(&[0.0, 1.0, 2.0, 3.0]);
            stream(&[0, 1, 2, 3], 3, Coding::Packed, &mut payload);
            single_tensor(
                DType::F32,
                &[4],
                vec![stage(Codebook, cb_params(2, 4))],
                payload,
            )
        },
    );
    add(
        "packed_nonzero_padding",
        "decode_error",
        "verify",
        "a nonzero padding bit after the last packed symbol",
        {
            let mut payload = centroids(&[0.0, 1.0]);
            stream(&[1, 0, 1], 1, Coding::Packed, &mut payload);
            let last = payload.len() - 1;
            payload[last] |= 1;
            single_tensor(
                DType::F32,
                &[3],
                vec![stage(Codebook, cb_params(1, 2))],
                payload,
            )
        },
    );
    add(
        "payload_left_over",
        "decode_error",
        "verify",
        "bytes after the last stream of a codebook payload",
        {
            let mut payload = centroids(&[0.0, 1.0]);
            stream(&[1, 0], 1, Coding::Packed, &mut payload);
            payload.push(0);
            single_tensor(
                DType::F32,
                &[2],
                vec![stage(Codebook, cb_params(1, 2))],
                payload,
            )
        },
    );
    add(
        "gaps_past_end",
        "decode_error",
        "verify",
        "relative gaps place a survivor past the tensor's 16 elements",
        {
            let mut payload = Vec::new();
            stream(&[10, 10], 5, Coding::Packed, &mut payload);
            payload.extend(centroids(&[1.0, 2.0]));
            single_tensor(
                DType::F32,
                &[4, 4],
                vec![stage(Sparse, sparse_params(rel5, 2))],
                payload,
            )
        },
    );
    add(
        "nnz_mismatch",
        "decode_error",
        "verify",
        "nnz says 3, the gap stream gives 2 survivors",
        {
            let mut payload = Vec::new();
            stream(&[1, 2], 5, Coding::Packed, &mut payload);
            payload.extend(centroids(&[1.0, 2.0, 3.0]));
            single_tensor(
                DType::F32,
                &[4, 4],
                vec![stage(Sparse, sparse_params(rel5, 3))],
                payload,
            )
        },
    );
    add(
        "nnz_past_elements",
        "decode_error",
        "verify",
        "nnz of 17 in a tensor of 16 elements",
        {
            single_tensor(
                DType::F32,
                &[4, 4],
                vec![stage(Sparse, sparse_params(rel5, 17))],
                Vec::new(),
            )
        },
    );
    add(
        "sparse_bad_layout",
        "bad_chain",
        "verify",
        "sparse layout 7",
        {
            let mut params = sparse_params(rel5, 0);
            params[0] = 7;
            let mut payload = Vec::new();
            stream(&[], 5, Coding::Packed, &mut payload);
            single_tensor(DType::F32, &[4, 4], vec![stage(Sparse, params)], payload)
        },
    );
    add(
        "csr_unsorted_columns",
        "decode_error",
        "verify",
        "CSR columns 3 then 1 in one row",
        {
            let mut payload = Vec::new();
            stream(&[2, 0], 3, Coding::Packed, &mut payload);
            stream(&[3, 1], 2, Coding::Packed, &mut payload);
            payload.extend(centroids(&[1.0, 2.0]));
            single_tensor(
                DType::F32,
                &[2, 4],
                vec![stage(Sparse, sparse_params(Layout::Csr, 2))],
                payload,
            )
        },
    );
    add(
        "csr_counts_mismatch",
        "decode_error",
        "verify",
        "CSR row counts add up to 3, nnz says 2",
        {
            let mut payload = Vec::new();
            stream(&[2, 1], 3, Coding::Packed, &mut payload);
            stream(&[0, 1], 2, Coding::Packed, &mut payload);
            payload.extend(centroids(&[1.0, 2.0]));
            single_tensor(
                DType::F32,
                &[2, 4],
                vec![stage(Sparse, sparse_params(Layout::Csr, 2))],
                payload,
            )
        },
    );
    let zstd_file = zstd();
    let zf = fields(&zstd_file);
    let swap_stage1 = |id: u8, mask: u64| {
        let mut b = zstd_file.clone();
        let stage1 = zf.tensors[0].2 as usize + 4; // stage[0] is dense, 4 bytes, no params
        b[stage1] = id;
        put_u64(&mut b, 16, mask);
        fix_header_crc(&mut b);
        b
    };
    add(
        "huffman_after_dense",
        "bad_chain",
        "open",
        "chain dense+huffman: dense has no symbol streams",
        swap_stage1(4, 1 | 1 << 4),
    );
    add(
        "codebook_after_dense",
        "bad_chain",
        "open",
        "chain dense+codebook: a codebook may only follow sparse",
        swap_stage1(3, 1 | 1 << 3),
    );
}

// ---- runtime fixtures ------------------------------------------------------------------------

/// The classic LeNet-5 shape on 28×28 MNIST inputs (61,706 parameters): conv 6@5×5 (padding 2),
/// ReLU, max-pool 2, conv 16@5×5, ReLU, max-pool 2, dense 120, ReLU, dense 84, ReLU, dense 10.
/// Random weights, scaled like a He initialisation; `dc` stores the weights pruned 80%,
/// 5-bit-quantized and Huffman-coded.
/// How the runtime fixtures store LeNet-5's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Dense,
    /// Pruned 80%, 5-bit codebooks, Huffman.
    Deep,
    /// conv2 Tucker-2, fc1 and fc2 low-rank (random factors).
    Factored,
    /// conv2 and fc1 as XNOR layers with binary weights.
    Xnor,
    /// conv2 and fc1 as binary layers of spec 1.5: a `sign` with per-channel thresholds in
    /// front of a `conv2d` / `dense` with binary weights.
    Sign,
    /// conv2 and fc1 with binary weights in ordinary layers (a binary-weight network).
    Bwn,
}

/// Random factors for the `Factored` form, multiples of 2^-12 like every fixture weight.
fn factored_weight(
    name: &str,
    shape: &[u64],
    rng: &mut Lcg,
    scale: f32,
) -> Option<encoding::Encoded<'static>> {
    use encoding::{lowrank, tucker};
    let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    match name {
        "conv2" => {
            let (ro, ri, s) = (8, 4, dims[2] * dims[3]);
            // Scale the factors so the rebuilt weights have about the dense ones' size.
            let f = (scale / ((ro * ri) as f32).sqrt()).sqrt();
            let t = tucker::Tucker {
                out: dims[0],
                inp: dims[1],
                spatial: s,
                rank_out: ro,
                rank_in: ri,
                u_out: lcg_weights(rng, dims[0] * ro, 1.0),
                core: lcg_weights(rng, ro * ri * s, f),
                u_in: lcg_weights(rng, dims[1] * ri, f),
            };
            Some(tucker::encode(&t, DType::F32))
        }
        "fc1" | "fc2" => {
            let rank = if name == "fc1" { 16 } else { 12 };
            let f = (scale / (rank as f32).sqrt()).sqrt();
            let lr = lowrank::LowRank {
                rows: dims[0],
                cols: dims[1],
                rank,
                u: lcg_weights(rng, dims[0] * rank, f),
                v: lcg_weights(rng, rank * dims[1], f),
            };
            Some(lowrank::encode(
                &lr,
                if name == "fc2" {
                    DType::F16
                } else {
                    DType::F32
                },
            ))
        }
        _ => None,
    }
}

pub fn lenet5(form: Form) -> Vec<u8> {
    let mut rng = Lcg(55);
    let mut w = Writer::new();
    w.set_metadata(
        "model.name",
        Value::String("lenet-5 (random weights)".into()),
    )
    .set_metadata(
        "model.classes",
        Value::strings((0..10).map(|i| i.to_string())),
    )
    .set_metadata("input.shape", Value::ints([1, 28, 28]))
    .set_metadata("input.mean", Value::floats([0.1307]))
    .set_metadata("input.std", Value::floats([0.3081]));
    let layers: [(&str, Vec<u64>); 5] = [
        ("conv1", vec![6, 1, 5, 5]),
        ("conv2", vec![16, 6, 5, 5]),
        ("fc1", vec![120, 400]),
        ("fc2", vec![84, 120]),
        ("fc3", vec![10, 84]),
    ];
    for (name, shape) in &layers {
        let fan_in: u64 = shape[1..].iter().product();
        let scale = (6.0 / fan_in as f32).sqrt();
        let mut weight: Vec<f32> = (0..shape.iter().product::<u64>())
            .map(|_| rng.weight(scale))
            .collect();
        let bias: Vec<f32> = (0..shape[0]).map(|_| rng.weight(0.05)).collect();
        let binary =
            matches!(form, Form::Xnor | Form::Sign | Form::Bwn) && matches!(*name, "conv2" | "fc1");
        let encoded = match form {
            Form::Deep => {
                cxrm::compress::methods::deep_compression::prune::prune_layer(&mut weight, 0.8);
                let plan = DeepPlan::pruned()
                    .gaps(Some(if shape.len() == 4 { 8 } else { 5 }))
                    .bits(5)
                    .huffman();
                cxrm::compress::methods::deep_compression::store::encode(
                    &weight,
                    shape,
                    &plan.into(),
                )
                .unwrap()
            }
            Form::Factored if matches!(*name, "conv2" | "fc1" | "fc2") => {
                factored_weight(name, shape, &mut rng, scale).expect("a factored layer")
            }
            Form::Xnor | Form::Sign | Form::Bwn if binary => {
                let rows = shape[0] as usize;
                let b = encoding::binary::binarize(&weight, rows, weight.len() / rows, DType::F32);
                encoding::binary::encode(
                    &b,
                    encoding::binary::Params {
                        scale_dtype: DType::F32,
                    },
                )
            }
            _ => encoding::dense::encode(Cow::Owned(f32_bytes(&weight))),
        };
        w.add_tensor(&format!("{name}.weight"), DType::F32, shape, encoded)
            .unwrap();
        w.add_dense(
            &format!("{name}.bias"),
            DType::F32,
            &[shape[0]],
            f32_bytes(&bias),
        )
        .unwrap();
    }
    // Thresholds of the signs in front of conv2 (6 channels) and fc1 (400 features).
    if form == Form::Sign {
        for (name, n) in [("conv2_sign", 6), ("fc1_sign", 400)] {
            let t: Vec<f32> = (0..n).map(|_| rng.weight(0.5)).collect();
            w.add_dense(
                &format!("{name}.threshold"),
                DType::F32,
                &[n as u64],
                f32_bytes(&t),
            )
            .unwrap();
        }
    }
    let xnor = matches!(form, Form::Xnor | Form::Sign);
    let sign = form == Form::Sign;
    let conv = |name: &str, input: &str, pad: i64| {
        let op = if xnor && !sign && name == "conv2" {
            "xnor_conv2d"
        } else {
            "conv2d"
        };
        Node::new(
            name,
            op,
            &[input],
            &[&format!("{name}.weight"), &format!("{name}.bias")],
        )
        .attr("padding", Value::ints([pad, pad, pad, pad]))
    };
    let pool = |name: &str, input: &str| {
        Node::new(name, "max_pool2d", &[input], &[])
            .attr("kernel", Value::ints([2, 2]))
            .attr("stride", Value::ints([2, 2]))
    };
    let dense = |name: &str, input: &str| {
        let op = if xnor && !sign && name == "fc1" {
            "xnor_dense"
        } else {
            "dense"
        };
        Node::new(
            name,
            op,
            &[input],
            &[&format!("{name}.weight"), &format!("{name}.bias")],
        )
    };
    // XNOR layers binarize their input, so it must not be all positive: in that form the
    // ReLUs before conv2 and fc1 are left out (XNOR-Net's blocks end in pooling, not ReLU).
    let relu_or_skip = |name: &'static str, input: &'static str| {
        if xnor && matches!(name, "relu1" | "relu2") {
            None
        } else {
            Some(Node::new(name, "relu", &[input], &[]))
        }
    };
    let mut nodes = vec![conv("conv1", INPUT, 2)];
    nodes.extend(relu_or_skip("relu1", "conv1"));
    nodes.push(pool("pool1", if xnor { "conv1" } else { "relu1" }));
    if sign {
        nodes.push(Node::new(
            "conv2_sign",
            "sign",
            &["pool1"],
            &["conv2_sign.threshold"],
        ));
    }
    nodes.push(conv("conv2", if sign { "conv2_sign" } else { "pool1" }, 0));
    nodes.extend(relu_or_skip("relu2", "conv2"));
    nodes.push(pool("pool2", if xnor { "conv2" } else { "relu2" }));
    nodes.extend([Node::new("flatten", "flatten", &["pool2"], &[])]);
    if sign {
        nodes.push(Node::new(
            "fc1_sign",
            "sign",
            &["flatten"],
            &["fc1_sign.threshold"],
        ));
    }
    nodes.extend([
        dense("fc1", if sign { "fc1_sign" } else { "flatten" }),
        Node::new("relu3", "relu", &["fc1"], &[]),
        dense("fc2", "relu3"),
        Node::new("relu4", "relu", &["fc2"], &[]),
        dense("fc3", "relu4"),
    ]);
    w.set_graph(Graph { nodes });
    finish(&w)
}

/// The fixed input of the runtime fixtures: pixel (y, x) of the 28×28 image is
/// `(7y + 3x) mod 256`, normalised with the file's mean and std.
pub fn runtime_input_pixels() -> Vec<u8> {
    (0..28)
        .flat_map(|y| (0..28).map(move |x| ((7 * y + 3 * x) % 256) as u8))
        .collect()
}

pub fn runtime_fixtures() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("lenet5", lenet5(Form::Dense)),
        ("lenet5_dc", lenet5(Form::Deep)),
        ("lenet5_factored", lenet5(Form::Factored)),
        ("lenet5_xnor", lenet5(Form::Xnor)),
        ("lenet5_sign", lenet5(Form::Sign)),
    ]
}
