//! `dense` (spec §5.1): elements in row-major order, little-endian. The identity encoding, and
//! the one a runtime can use in place straight from the memory map.

use super::{DecodeContext, Encoded, Stage};
use crate::error::{Error, ErrorCode, Result};
use std::borrow::Cow;

/// Store dense bytes as they are.
pub fn encode(bytes: Cow<'_, [u8]>) -> Encoded<'_> {
    Encoded::new(super::Repr::Dense, false, bytes)
}

/// Check that `bytes` is exactly the tensor's dense size; the bytes are then the tensor.
pub fn decode(stage: &Stage<'_>, bytes: &[u8], ctx: &DecodeContext<'_>, field: &str) -> Result<()> {
    if !stage.params.is_empty() {
        return Err(Error::format(
            ErrorCode::BadChain,
            format!("{field}.param_len"),
            stage.offset + 2,
            format!(
                "dense takes no parameters, found {} bytes",
                stage.params.len()
            ),
        ));
    }
    if bytes.len() as u64 != ctx.dense_len {
        return Err(Error::format(
            ErrorCode::SizeMismatch,
            field,
            stage.offset,
            format!(
                "dense data is {} bytes, the tensor needs {}",
                bytes.len(),
                ctx.dense_len
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Limits;

    #[test]
    fn decode_checks_length() {
        let stage = Stage {
            code: 0,
            params: &[],
            offset: 0,
        };
        let ctx = DecodeContext {
            budget: crate::budget::Budget::machine(),
            what: "t",
            dtype: crate::DType::U8,
            shape: &[8],
            elements: 8,
            dense_len: 8,
            payload_offset: 0,
            limits: &Limits::SPEC,
        };
        assert!(decode(&stage, &[0; 8], &ctx, "f").is_ok());
        assert_eq!(
            decode(&stage, &[0; 7], &ctx, "f").unwrap_err().code(),
            Some(ErrorCode::SizeMismatch)
        );
    }
}
