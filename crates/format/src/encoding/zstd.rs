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
    if let Some(detail) = oversized_window(input) {
        return Err(fail(detail));
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

/// The largest Window_Size a frame may declare (spec §5.2): libzstd's default limit, 2^27.
pub const MAX_WINDOW: u64 = 1 << 27;

/// Why some frame of `input` declares a Window_Size above [`MAX_WINDOW`] (RFC 8878
/// §3.1.1.1.2; a single-segment frame's Window_Size is its Frame_Content_Size), found by walking
/// the frame and block headers without decoding anything. The check does not depend on how the
/// decoder is driven: libzstd skips its own window check when it decodes a whole frame in one
/// pass. A header the walk cannot follow (bad magic, cut short) ends the walk, and the decoder
/// then reports it.
fn oversized_window(input: &[u8]) -> Option<String> {
    let le = |at: usize, n: usize| -> Option<u64> {
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(input.get(at..at.checked_add(n)?)?);
        Some(u64::from_le_bytes(v))
    };
    let mut pos = 0usize;
    let mut frame = 0usize;
    while pos < input.len() {
        let magic = le(pos, 4)?;
        if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
            // A skippable frame: 4-byte magic, 4-byte size, then that many bytes.
            pos = pos.checked_add(8)?.checked_add(le(pos + 4, 4)? as usize)?;
            frame += 1;
            continue;
        }
        if magic != 0xFD2F_B528 {
            return None;
        }
        let fhd = le(pos + 4, 1)? as u8;
        let single_segment = fhd & 0x20 != 0;
        let mut at = pos + 5;
        let mut window = 0;
        if !single_segment {
            let wd = le(at, 1)? as u8;
            at += 1;
            let base = 1u64 << (10 + (wd >> 3));
            window = base + base / 8 * u64::from(wd & 7);
        }
        at += [0, 1, 2, 4][usize::from(fhd & 3)];
        let fcs_len = match fhd >> 6 {
            0 => usize::from(single_segment),
            1 => 2,
            2 => 4,
            _ => 8,
        };
        if single_segment {
            window = le(at, fcs_len)? + if fcs_len == 2 { 256 } else { 0 };
        }
        if window > MAX_WINDOW {
            return Some(format!(
                "zstd frame {frame} declares a window of {window} bytes, above the limit of \
                 {MAX_WINDOW}"
            ));
        }
        at += fcs_len;
        loop {
            let header = le(at, 3)?;
            let size = (header >> 3) as usize;
            at = at.checked_add(3)?.checked_add(match (header >> 1) & 3 {
                0 | 2 => size,
                1 => 1,
                _ => return None,
            })?;
            if header & 1 == 1 {
                break;
            }
        }
        if fhd & 4 != 0 {
            at += 4;
        }
        pos = at;
        frame += 1;
    }
    None
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

    /// One zstd frame holding `data` in a single raw block, with the given frame header
    /// descriptor, window descriptor (absent for a single-segment frame) and content size field.
    pub(crate) fn raw_frame(data: &[u8], fhd: u8, window: Option<u8>, fcs: &[u8]) -> Vec<u8> {
        let mut f = 0xFD2F_B528u32.to_le_bytes().to_vec();
        f.push(fhd);
        f.extend(window);
        f.extend_from_slice(fcs);
        f.extend_from_slice(&((data.len() as u32) << 3 | 1).to_le_bytes()[..3]);
        f.extend_from_slice(data);
        f
    }

    fn decode_bytes(input: &[u8], decoded_len: u64) -> Result<Vec<u8>> {
        let params = decoded_len.to_le_bytes();
        let stage = Stage {
            code: 1,
            params: &params,
            offset: 0,
        };
        decode(&stage, input, &ctx(&Limits::SPEC), "f")
    }

    #[test]
    fn windows_above_2_27_are_refused_however_the_frame_is_decoded() {
        let data: Vec<u8> = (0..16).collect();
        let fcs4 = 16u32.to_le_bytes();
        // Window descriptor: exponent e, mantissa m -> 2^(10+e) * (1 + m/8).
        assert_eq!(
            decode_bytes(&raw_frame(&data, 0x80, Some(17 << 3), &fcs4), 16).unwrap(),
            data
        );
        assert_eq!(
            decode_bytes(&raw_frame(&data, 0x00, Some(17 << 3), &[]), 16).unwrap(),
            data
        );
        for (fhd, wd, fcs) in [
            (0x80, Some(17 << 3 | 1), &fcs4[..]), // 2^27 + 2^24, content size present
            (0x00, Some(18 << 3), &[][..]),       // 2^28, no content size
        ] {
            let err = decode_bytes(&raw_frame(&data, fhd, wd, fcs), 16).unwrap_err();
            assert_eq!(err.code(), Some(ErrorCode::DecodeError), "{err}");
        }
        // A single-segment frame's window is its content size: 2^27 + 1 is too large.
        let big = ((1u64 << 27) + 1).to_le_bytes();
        let err = decode_bytes(&raw_frame(&data, 0xE0, None, &big), 16).unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::DecodeError));
        // The second frame counts as much as the first; a skippable frame in between is fine.
        let mut two = raw_frame(&data, 0x00, Some(0), &[]);
        two.extend_from_slice(&0x184D_2A5Au32.to_le_bytes());
        two.extend_from_slice(&3u32.to_le_bytes());
        two.extend_from_slice(b"abc");
        two.extend(raw_frame(&data, 0x00, Some(18 << 3), &[]));
        let err = decode_bytes(&two, 32).unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::DecodeError));
        two.truncate(two.len() - 16 - 3 - 6);
        two.extend(raw_frame(&data, 0x00, Some(17 << 3), &[]));
        assert_eq!(decode_bytes(&two, 32).unwrap().len(), 32);
    }

    #[test]
    fn content_size_and_checksum_are_verified() {
        let data: Vec<u8> = (0..100).collect();
        // Single-segment frames with a 1-byte content size: right, one short, one over.
        assert_eq!(
            decode_bytes(&raw_frame(&data, 0x20, None, &[100]), 100).unwrap(),
            data
        );
        for fcs in [99u8, 101] {
            let err = decode_bytes(&raw_frame(&data, 0x20, None, &[fcs]), 100).unwrap_err();
            assert_eq!(
                err.code(),
                Some(ErrorCode::DecodeError),
                "content size {fcs}"
            );
        }
        let mut framed = ::zstd::bulk::Compressor::new(3).unwrap();
        framed
            .set_parameter(::zstd::zstd_safe::CParameter::ChecksumFlag(true))
            .unwrap();
        let mut c = framed.compress(&data).unwrap();
        assert_eq!(decode_bytes(&c, 100).unwrap(), data);
        *c.last_mut().unwrap() ^= 1;
        let err = decode_bytes(&c, 100).unwrap_err();
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
