//! Property tests for the Deep Compression stages: every layout, stream coding and chain
//! prefix, over random shapes, sparsities and value distributions, decodes to exactly what the
//! encoder meant; plus one tensor of more than 2^24 elements.

use cxrm::compress::methods::deep_compression::store::{
    self as deep, DeepPlan, Prepared, Quantize, SparsePlan, StreamMode,
};
use cxrm::format::cursor::Cursor;
use cxrm::format::encoding::codebook::Init;
use cxrm::format::encoding::sparse::Layout;
use cxrm::format::encoding::stream::{self, Coding};
use cxrm::{Cxrm, DType, Writer};
use proptest::prelude::*;

/// Values from one of three distributions: peaked (trained-weight-like), uniform, few levels.
fn values(n: usize) -> impl Strategy<Value = Vec<f32>> {
    let peaked = prop::collection::vec((-1.0f32..1.0).prop_map(|u| u * u * u * 0.3), n);
    let uniform = prop::collection::vec(-2.0f32..2.0, n);
    let levels = prop::collection::vec(prop::sample::select(vec![-0.5f32, 0.25, 1.0]), n);
    prop_oneof![peaked, uniform, levels]
}

fn case() -> impl Strategy<Value = (Vec<u64>, Vec<f32>, f64)> {
    prop::collection::vec(0u64..9, 1..4).prop_flat_map(|shape| {
        let n = shape.iter().product::<u64>() as usize;
        (Just(shape), values(n), 0.0f64..1.0)
    })
}

fn expected(p: &Prepared) -> Vec<f32> {
    let kept: Vec<f32> = match &p.codebook {
        Some((_, _, cb)) => cb
            .indices
            .iter()
            .map(|&i| cb.centroids[i as usize])
            .collect(),
        None => p.kept.clone(),
    };
    match &p.positions {
        Some(pos) => {
            let mut out = vec![0.0f32; p.elements as usize];
            for (&i, &v) in pos.iter().zip(&kept) {
                out[i as usize] = v;
            }
            out
        }
        None => kept,
    }
}

fn decode_file(shape: &[u64], enc: cxrm::format::encoding::Encoded<'static>) -> Vec<f32> {
    let mut w = Writer::new();
    w.add_tensor("t", DType::F32, shape, enc).unwrap();
    let bytes = w.to_bytes().unwrap();
    let file = Cxrm::parse(&bytes).unwrap();
    file.verify().unwrap();
    file.decode("t").unwrap().to_f32_vec()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn every_form_decodes_bit_exactly(
        (shape, mut values, sparsity) in case(),
        sparse in any::<bool>(),
        bits in prop::option::of(1u8..=8),
        index_bits in 2u8..=16,
        csr in any::<bool>(),
        mode in prop::sample::select(vec![StreamMode::Packed, StreamMode::Entropy, StreamMode::Bytes, StreamMode::HuffmanOnly]),
        zstd in any::<bool>(),
        f16 in any::<bool>(),
        init in prop::sample::select(vec![Init::Linear, Init::Density, Init::Random(7)]),
    ) {
        if sparse {
            cxrm::compress::methods::deep_compression::prune::prune_layer(&mut values, sparsity);
        }
        let plan = DeepPlan {
            sparse: sparse.then_some(SparsePlan { index_bits: Some(index_bits) }),
            quantize: bits.map(|bits| Quantize { bits, init, centroid_dtype: if f16 { DType::F16 } else { DType::F32 } }),
            ..DeepPlan::default()
        };
        let p = Prepared::new(&values, &shape, &plan);
        let layout = sparse.then_some(if csr { Layout::Csr } else { Layout::Relative { index_bits } });
        let enc = p.build(layout, mode, zstd.then_some(3)).unwrap();
        let out = decode_file(&shape, enc);
        let want = expected(&p);
        prop_assert_eq!(out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }

    #[test]
    fn the_chosen_encoding_is_never_larger_than_packed((shape, mut values, sparsity) in case(), bits in 1u8..=8) {
        cxrm::compress::methods::deep_compression::prune::prune_layer(&mut values, sparsity);
        let plan = DeepPlan::pruned().bits(bits).huffman();
        let best = deep::encode(&values, &shape, &plan.into()).unwrap();
        let packed = Prepared::new(&values, &shape, &plan).build(Some(Layout::Relative { index_bits: 5 }), StreamMode::Packed, None).unwrap();
        prop_assert!(best.payload.len() <= packed.payload.len());
        let out = decode_file(&shape, best);
        prop_assert_eq!(out.len() as u64, shape.iter().product::<u64>());
    }

    #[test]
    fn symbol_streams_round_trip(width in 1u8..=16, symbols in prop::collection::vec(any::<u16>(), 0..400), skew in 0u32..8) {
        let symbols: Vec<u16> = symbols.iter().map(|&s| ((s as u32 >> skew) % (1 << width)) as u16).collect();
        for coding in [Coding::Packed, Coding::Bytes, Coding::Huffman] {
            let mut out = Vec::new();
            stream::write(&symbols, width, coding, &mut out);
            let mut c = Cursor::new(&out, 0);
            let decoded = stream::read(&mut c, "s", width, symbols.len() as u64, true).unwrap();
            let stats = decoded.stats("s");
            prop_assert_eq!(&decoded.symbols, &symbols);
            prop_assert_eq!(decoded.stored_bytes, out.len() as u64);
            prop_assert!(c.is_empty());
            if coding == Coding::Huffman && !symbols.is_empty() {
                // Huffman codes cost at most one bit per symbol more than the entropy.
                let code = stats.code_bits_per_symbol.unwrap();
                prop_assert!(code >= stats.entropy - 1e-9 && code < stats.entropy + 1.0, "{} vs {}", code, stats.entropy);
            }
        }
    }

    #[test]
    fn corrupted_streams_fail_cleanly(symbols in prop::collection::vec(0u16..32, 1..300), edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut out = Vec::new();
        stream::write(&symbols, 5, Coding::Huffman, &mut out);
        for (at, v) in edits {
            let i = at.index(out.len());
            out[i] = v;
        }
        let _ = stream::read(&mut Cursor::new(&out, 0), "s", 5, symbols.len() as u64, true);
    }
}

#[test]
fn a_tensor_of_more_than_2_pow_24_elements() {
    let n = (1usize << 24) + 3;
    let mut rng = cxrm::format::lcg::Lcg(99);
    let mut values: Vec<f32> = (0..n).map(|_| rng.centred() * 0.1).collect();
    cxrm::compress::methods::deep_compression::prune::prune_layer(&mut values, 0.9);
    let shape = [n as u64];
    let plan = DeepPlan::pruned().bits(5).huffman();
    let p = Prepared::new(&values, &shape, &plan);
    let enc = p
        .build(
            Some(Layout::Relative { index_bits: 5 }),
            StreamMode::HuffmanOnly,
            None,
        )
        .unwrap();
    let bits_per_weight = enc.payload.len() as f64 * 8.0 / n as f64;
    assert!(bits_per_weight < 1.5, "{bits_per_weight} bits per weight");
    let out = decode_file(&shape, enc);
    assert_eq!(out.len(), n);
    let want = expected(&p);
    assert!(
        out.iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    );
}
