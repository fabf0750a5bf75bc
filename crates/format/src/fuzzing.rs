//! Entry points shared by the fuzz targets (`fuzz/`) and the regression tests that replay
//! their corpora (`tests/fuzz_regressions.rs`), so both exercise exactly the same code.

use crate::budget::Budget;
use crate::container::reader::{Cxrm, ReadOptions};

/// The fuzz targets run with libFuzzer's `-malloc_limit_mb=2048`, so that any allocation sized
/// from the input past it is reported as a crash; decoding stays within half of that.
pub const FUZZ_BUDGET: Budget = Budget(1 << 30);

/// Open arbitrary bytes as a file and, if that succeeds, run every check and decode there is.
/// Returns whether the file was fully valid.
pub fn open_and_verify(data: &[u8]) -> bool {
    // The inspect path: opens files with unknown encodings and reads metadata and graph.
    let lenient = ReadOptions {
        allow_unknown_encodings: true,
        budget: FUZZ_BUDGET,
        ..Default::default()
    };
    if let Ok(file) = Cxrm::parse_with(data, &lenient) {
        let _ = file.metadata();
        let _ = file.graph();
        for t in file.tensors() {
            let _ = file.decode_record(t);
            let _ = file.view(t.name);
        }
    }
    let strict = ReadOptions {
        budget: FUZZ_BUDGET,
        ..Default::default()
    };
    match Cxrm::parse_with(data, &strict) {
        Ok(file) => file.verify().is_ok(),
        Err(_) => false,
    }
}

use crate::dtype::DType;
use crate::encoding::{self, DecodeContext, Stage, StageId};
use crate::limits::Limits;

/// Fuzz input → one symbol stream: `[width, count lo, count hi, stream...]`, Huffman allowed.
pub fn symbol_stream(data: &[u8]) {
    let [width, lo, hi, rest @ ..] = data else {
        return;
    };
    let count = u16::from_le_bytes([*lo, *hi]) as u64;
    let mut c = crate::cursor::Cursor::new(rest, 0);
    let _ = encoding::stream::read(&mut c, "fuzz", *width, count, true);
}

/// Run a representation's decoder on fuzz-chosen parameters and payload.
fn decode_representation(stages: &[(StageId, &[u8])], shape: &[u64], payload: &[u8]) {
    let stages: Vec<Stage<'_>> = stages
        .iter()
        .map(|(id, params)| Stage {
            code: *id as u8,
            params,
            offset: 0,
        })
        .collect();
    let limits = Limits::SPEC;
    let ctx = DecodeContext {
        budget: FUZZ_BUDGET,
        ..DecodeContext::in_memory("fuzz", DType::F32, shape, &limits)
    };
    let _ = encoding::decode_detailed(&stages, payload, &ctx);
}

/// Fuzz input → a sparse tensor: `[12 sparse params][flags][4 codebook params][rows][cols][payload...]`;
/// flags bit 0 adds a codebook stage, bit 1 a huffman stage.
pub fn sparse_payload(data: &[u8]) {
    if data.len() < 19 {
        return;
    }
    let (sparse, rest) = data.split_at(12);
    let flags = rest[0];
    let (cb, rest) = rest[1..].split_at(4);
    let shape = [rest[0] as u64, rest[1] as u64];
    let mut stages: Vec<(StageId, &[u8])> = vec![(StageId::Sparse, sparse)];
    if flags & 1 != 0 {
        stages.push((StageId::Codebook, cb));
    }
    if flags & 2 != 0 {
        stages.push((StageId::Huffman, &[]));
    }
    decode_representation(&stages, &shape, &rest[2..]);
}

/// Fuzz input → a codebook tensor: `[4 codebook params][flags][elements][payload...]`; flags
/// bit 0 adds a huffman stage.
pub fn codebook_payload(data: &[u8]) {
    if data.len() < 6 {
        return;
    }
    let (cb, rest) = data.split_at(4);
    let mut stages: Vec<(StageId, &[u8])> = vec![(StageId::Codebook, cb)];
    if rest[0] & 1 != 0 {
        stages.push((StageId::Huffman, &[]));
    }
    decode_representation(&stages, &[rest[1] as u64], &rest[2..]);
}

/// Fuzz input → a factored tensor: `[kind][12 parameter bytes][d0][d1][d2][payload...]`. `kind`
/// mod 3 picks `lowrank` (the first 8 parameter bytes), `tucker` (all 12) or `binary` (4);
/// the tensor is `[d0, d1, d2]`. The factors are read both for decoding and as a runtime
/// reads them; the runtime's fuzz entry builds its kernels' form from what this returns.
pub fn factored_payload(data: &[u8]) -> Option<encoding::Factored> {
    let [kind, head @ ..] = data else {
        return None;
    };
    if head.len() < 15 {
        return None;
    }
    let (params, rest) = head.split_at(12);
    let (id, len) = match kind % 3 {
        0 => (StageId::LowRank, 8),
        1 => (StageId::Tucker, 12),
        _ => (StageId::Binary, 4),
    };
    let shape = [rest[0] as u64, rest[1] as u64, rest[2] as u64];
    decode_representation(&[(id, &params[..len])], &shape, &rest[3..]);
    let stage = [Stage {
        code: id as u8,
        params: &params[..len],
        offset: 0,
    }];
    let limits = Limits::SPEC;
    let ctx = DecodeContext {
        budget: FUZZ_BUDGET,
        ..DecodeContext::in_memory("fuzz", DType::F32, &shape, &limits)
    };
    let factored = encoding::read_factored(&stage, &rest[3..], &ctx).ok()??;
    let _ = factored.to_f32();
    Some(factored)
}

/// Fuzz input → a MIRACLE tensor: `[20 parameter bytes][d0][d1][payload...]`, the tensor
/// `[d0, d1]` in f32. Its decode regenerates every element, so the shape stays small.
pub fn miracle_payload(data: &[u8]) {
    if data.len() < 22 {
        return;
    }
    let (params, rest) = data.split_at(encoding::miracle::PARAMS_LEN);
    let shape = [rest[0] as u64, rest[1] as u64];
    decode_representation(&[(StageId::Miracle, params)], &shape, &rest[2..]);
}

/// Fuzz input → a hashed MIRACLE tensor: `[16 hashed parameter bytes][20 miracle parameter
/// bytes][d0][d1][payload...]`, the tensor `[d0, d1]` in f32.
pub fn hashed_payload(data: &[u8]) {
    let head = encoding::hashed::PARAMS_LEN + encoding::miracle::PARAMS_LEN;
    if data.len() < head + 2 {
        return;
    }
    let (shared, rest) = data.split_at(encoding::hashed::PARAMS_LEN);
    let (values, rest) = rest.split_at(encoding::miracle::PARAMS_LEN);
    let shape = [rest[0] as u64, rest[1] as u64];
    decode_representation(
        &[(StageId::Hashed, shared), (StageId::Miracle, values)],
        &shape,
        &rest[2..],
    );
}
