//! Fuzz entry points that reach into the runtime, shared by the fuzz targets (`fuzz/`) and the
//! tests that replay their corpora. The format-only entries live in `cxrm_format::fuzzing`.

pub use cxrm_format::fuzzing::{
    codebook_payload, hashed_payload, miracle_payload, open_and_verify, sparse_payload,
    symbol_stream,
};

/// Fuzz input → a factored tensor, read as decoding reads it and then turned into the form the
/// runtime executes (sign bits for `binary`).
pub fn factored_payload(data: &[u8]) {
    if let Some(cxrm_format::encoding::Factored::Binary(b)) =
        cxrm_format::fuzzing::factored_payload(data)
    {
        let _ = crate::xnor::BitRows::from_binary(&b);
    }
}
