//! `zstd` (spec §5.2): a generic byte stage. Parameters: `u64 decoded_len`.
//!
//! Decoding streams into a buffer that grows with what the frames actually produce, capped at
//! `decoded_len`, so a hostile `decoded_len` can never make us allocate up front, and a
//! decompression bomb stops at the declared size.

use super::{DecodeContext, Encoded, Stage, StageId, StageSpec, fixed_params};
use crate::error::{Error, ErrorCode, Result};
use std::borrow::Cow;
use std::io::Read;

/// Compress the payload of `inner` and append a zstd stage. Returns `inner` unchanged when
/// compression would not make it smaller (the spec says a writer SHOULD drop such a stage).
pub fn encode(inner: Encoded<'_>, level: i32) -> Result<Encoded<'_>> {
    let compressed = ::zstd::bulk::compress(&inner.payload, level)
        .map_err(|e| Error::io("zstd compression", e))?;
    if compressed.len() >= inner.payload.len() {
        return Ok(inner);
    }
    let mut stages = inner.stages;
    stages.push(StageSpec {
        id: StageId::Zstd,
        params: (inner.payload.len() as u64).to_le_bytes().to_vec(),
    });
    Ok(Encoded {
        stages,
        payload: Cow::Owned(compressed),
    })
}

/// [`encode`] when a level is given, else `inner` unchanged: how every encoder applies an
/// optional zstd stage.
pub fn encode_if(inner: Encoded<'_>, level: Option<i32>) -> Result<Encoded<'_>> {
    match level {
        Some(level) => encode(inner, level),
        None => Ok(inner),
    }
}

pub fn decode(
    stage: &Stage<'_>,
    input: &[u8],
    ctx: &DecodeContext<'_>,
    field: &str,
) -> Result<Vec<u8>> {
    let decoded_len = u64::from_le_bytes(fixed_params::<8>(stage, field)?);
    let at = stage.params_offset();
    if decoded_len > ctx.limits.decoded_bytes {
        return Err(Error::format(
            ErrorCode::LimitExceeded,
            format!("{field}.decoded_len"),
            at,
            format!(
                "{decoded_len} bytes exceeds the limit of {}",
                ctx.limits.decoded_bytes
            ),
        ));
    }
    let fail = |detail: String| Error::format(ErrorCode::DecodeError, field, stage.offset, detail);
    if input.is_empty() {
        return Err(fail(
            "a zstd stage holds at least one frame; the input is empty".into(),
        ));
    }
    let decoder = ::zstd::stream::read::Decoder::with_buffer(input)
        .map_err(|e| fail(format!("zstd: {e}")))?;
    // Start small; grow only as real output arrives. One byte past the declared length is
    // enough to detect an overlong stream.
    let mut out = Vec::with_capacity(decoded_len.min(1 << 20) as usize);
    decoder
        .take(decoded_len + 1)
        .read_to_end(&mut out)
        .map_err(|e| fail(format!("zstd: {e}")))?;
    if out.len() as u64 != decoded_len {
        return Err(fail(format!(
            "zstd stream decodes to {}{} bytes, decoded_len says {decoded_len}",
            if out.len() as u64 > decoded_len {
                "more than "
            } else {
                ""
            },
            out.len().min(decoded_len as usize)
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::dense;
    use crate::limits::Limits;

    fn ctx(limits: &Limits) -> DecodeContext<'_> {
        DecodeContext {
            what: "t",
            dtype: crate::DType::U8,
            shape: &[],
            elements: 0,
            dense_len: 0,
            payload_offset: 0,
            limits,
            budget: crate::budget::Budget::machine(),
        }
    }

    #[test]
    fn round_trips_and_skips_when_not_smaller() {
        let data = vec![7u8; 4096];
        let enc = encode(dense::encode(Cow::Borrowed(&data)), 3).unwrap();
        assert_eq!(enc.stages.len(), 2);
        let params = enc.stages[1].params.clone();
        let stage = Stage {
            code: 1,
            params: &params,
            offset: 0,
        };
        assert_eq!(
            decode(&stage, &enc.payload, &ctx(&Limits::SPEC), "f").unwrap(),
            data
        );

        let noise: Vec<u8> = (0..64u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let enc = encode(dense::encode(Cow::Borrowed(&noise)), 3).unwrap();
        assert_eq!(
            enc.stages.len(),
            1,
            "incompressible data keeps no zstd stage"
        );
    }

    #[test]
    fn rejects_wrong_declared_length_and_garbage() {
        let data = vec![1u8; 1000];
        let compressed = ::zstd::bulk::compress(&data, 1).unwrap();
        for declared in [999u64, 1001, 0] {
            let params = declared.to_le_bytes();
            let stage = Stage {
                code: 1,
                params: &params,
                offset: 0,
            };
            let err = decode(&stage, &compressed, &ctx(&Limits::SPEC), "f").unwrap_err();
            assert_eq!(
                err.code(),
                Some(ErrorCode::DecodeError),
                "declared {declared}"
            );
        }
        let params = 10u64.to_le_bytes();
        let stage = Stage {
            code: 1,
            params: &params,
            offset: 0,
        };
        let err = decode(&stage, b"not zstd at all", &ctx(&Limits::SPEC), "f").unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::DecodeError));
    }

    #[test]
    fn a_bomb_stops_at_the_declared_size() {
        // 64 MiB of zeros compresses to a few KiB; declaring 1 KiB must fail after ~1 KiB.
        let compressed = ::zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap();
        let params = 1024u64.to_le_bytes();
        let stage = Stage {
            code: 1,
            params: &params,
            offset: 0,
        };
        let err = decode(&stage, &compressed, &ctx(&Limits::SPEC), "f").unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::DecodeError));
    }
}
