//! Decoding the representations that carry symbol streams (sparse, codebook) into dense bytes.
//! The stage modules own their layouts; this module only puts them together in the order the
//! spec's payload layout gives (§5.6, §5.7).

use super::{DecodeContext, Decoded, codebook, sparse};
use crate::cursor::Cursor;
use crate::error::{Error, ErrorCode, Result};
use std::borrow::Cow;

pub(crate) fn finish(c: &Cursor<'_>, ctx: &DecodeContext<'_>) -> Result<()> {
    if !c.is_empty() {
        return Err(Error::format(
            ErrorCode::DecodeError,
            format!("{}.payload", ctx.what),
            c.offset(),
            format!("{} bytes left over after the last stream", c.remaining()),
        ));
    }
    Ok(())
}

pub fn decode_codebook<'a>(
    params: &codebook::Params,
    huffman: bool,
    bytes: &[u8],
    base: u64,
    ctx: &DecodeContext<'_>,
) -> Result<Decoded<'a>> {
    let mut c = Cursor::new(bytes, base);
    let (values, stream) =
        codebook::read_payload(&mut c, params, ctx.elements, huffman, ctx.what, ctx.dtype)?;
    finish(&c, ctx)?;
    Ok(Decoded {
        bytes: Cow::Owned(values),
        nnz: None,
        codebook: Some(*params),
        streams: vec![("indices", stream)],
    })
}

pub fn decode_sparse<'a>(
    params: &sparse::Params,
    cb_params: Option<&codebook::Params>,
    huffman: bool,
    bytes: &[u8],
    base: u64,
    ctx: &DecodeContext<'_>,
) -> Result<Decoded<'a>> {
    let mut c = Cursor::new(bytes, base);
    let (positions, mut streams) =
        sparse::read_positions(&mut c, params, ctx.shape, ctx.elements, huffman, ctx.what)?;
    let size = ctx.dtype.size();
    // Read every value before allocating the output, so only a file whose streams all decode
    // gets the (limit-checked) dense buffer.
    let values: Cow<'_, [u8]> = match cb_params {
        Some(cbp) => {
            let (values, stream) =
                codebook::read_payload(&mut c, cbp, params.nnz, huffman, ctx.what, ctx.dtype)?;
            streams.push(("indices", stream));
            Cow::Owned(values)
        }
        None => Cow::Borrowed(c.bytes(params.nnz as usize * size, || {
            format!("{}.values", ctx.what)
        })?),
    };
    finish(&c, ctx)?;
    let mut out = ctx
        .budget
        .zeroed(|| format!("decoding {}", ctx.what), ctx.dense_len)?;
    for (&p, v) in positions.iter().zip(values.chunks_exact(size)) {
        out[p as usize * size..(p as usize + 1) * size].copy_from_slice(v);
    }
    Ok(Decoded {
        bytes: Cow::Owned(out),
        nnz: Some(params.nnz),
        codebook: cb_params.copied(),
        streams,
    })
}
