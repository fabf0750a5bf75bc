//! Symbol streams (spec §5.4): the index streams of the sparse and codebook stages, stored
//! packed at a fixed width, one per byte (for a zstd stage to work on), or Huffman-coded.
//!
//! The header is two bytes and two LEB128 integers, and Huffman code lengths are bit-packed:
//! a stream of a hundred symbols should not pay tens of bytes of bookkeeping, or a small
//! layer's Huffman stream loses to zstd's.

use super::bits::{self, BitReader, BitWriter};
use super::huffman;
use crate::cursor::Cursor;
use crate::error::{Error, ErrorCode, Result};

pub const MAX_WIDTH: u8 = 16;
/// Bits per stored code length: enough for lengths up to 31 (the limit is 24).
const MAX_LEN_BITS: u8 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Coding {
    /// `width` bits per symbol, most significant bit first.
    Packed = 0,
    /// One byte per symbol (width ≤ 8) or a little-endian u16 (width ≤ 16).
    Bytes = 1,
    /// Canonical Huffman (§5.5); only in chains that list the `huffman` stage.
    Huffman = 2,
}

impl Coding {
    pub fn name(self) -> &'static str {
        match self {
            Coding::Packed => "packed",
            Coding::Bytes => "bytes",
            Coding::Huffman => "huffman",
        }
    }
}

/// A decoded stream: its symbols and how it was stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    pub symbols: Vec<u16>,
    pub coding: Coding,
    pub width: u8,
    /// Bytes of the whole stream, header included.
    pub stored_bytes: u64,
    /// The code lengths, for Huffman streams.
    pub huffman_lengths: Option<Vec<u8>>,
}

/// What a stream looked like, for `cxrm inspect`.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamStats {
    pub name: &'static str,
    pub coding: Coding,
    pub width: u8,
    pub count: u64,
    /// Bytes of the whole stream: header, code-length table and data.
    pub data_bytes: u64,
    /// Empirical entropy of the symbols, bits per symbol.
    pub entropy: f64,
    /// Bits per symbol the stored stream spends, everything included.
    pub bits_per_symbol: f64,
    /// For Huffman streams: bits per symbol of the code alone (no header, no table).
    pub code_bits_per_symbol: Option<f64>,
}

impl Stream {
    pub fn stats(&self, name: &'static str) -> StreamStats {
        let freqs = frequencies(&self.symbols, self.width);
        let count = self.symbols.len() as u64;
        let code_bits_per_symbol = self.huffman_lengths.as_ref().map(|lengths| {
            let mut padded = lengths.clone();
            padded.resize(1 << self.width, 0);
            huffman::coded_bits(&freqs, &padded) as f64 / count.max(1) as f64
        });
        StreamStats {
            name,
            coding: self.coding,
            width: self.width,
            count,
            data_bytes: self.stored_bytes,
            entropy: huffman::entropy(&freqs),
            bits_per_symbol: self.stored_bytes as f64 * 8.0 / count.max(1) as f64,
            code_bits_per_symbol,
        }
    }
}

pub fn frequencies(symbols: &[u16], width: u8) -> Vec<u64> {
    let mut freqs = vec![0u64; 1 << width];
    for &s in symbols {
        freqs[s as usize] += 1;
    }
    freqs
}

/// Append an unsigned LEB128 integer: 7 bits a byte, least significant group first.
pub fn write_uleb128(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Read an unsigned LEB128 integer in its shortest form (at most 10 bytes, fitting 64 bits).
pub fn read_uleb128(c: &mut Cursor<'_>, field: &dyn Fn() -> String) -> Result<u64> {
    let at = c.offset();
    let mut v = 0u64;
    for i in 0..10 {
        let byte = c.u8(field)?;
        let group = (byte & 0x7f) as u64;
        if i == 9 && byte > 1 {
            return Err(Error::format(
                ErrorCode::DecodeError,
                field(),
                at,
                "LEB128 value does not fit 64 bits",
            ));
        }
        v |= group << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Err(Error::format(
                    ErrorCode::DecodeError,
                    field(),
                    at,
                    "LEB128 value is not in its shortest form",
                ));
            }
            return Ok(v);
        }
    }
    unreachable!("the tenth byte ends the value or fails")
}

fn pack_bits(values: impl Iterator<Item = u16>, width: u8, capacity: usize) -> Vec<u8> {
    let mut bits = BitWriter::with_capacity((capacity * width as usize).div_ceil(8));
    for v in values {
        bits.put(v as u32, width);
    }
    bits.finish()
}

/// Append a stream in `coding` to `out`. Every symbol must be below 2^width.
pub fn write(symbols: &[u16], width: u8, coding: Coding, out: &mut Vec<u8>) {
    assert!((1..=MAX_WIDTH).contains(&width));
    debug_assert!(symbols.iter().all(|&s| (s as u32) < 1 << width));
    let data = match coding {
        Coding::Packed => pack_bits(symbols.iter().copied(), width, symbols.len()),
        Coding::Bytes if width <= 8 => symbols.iter().map(|&s| s as u8).collect(),
        Coding::Bytes => symbols.iter().flat_map(|s| s.to_le_bytes()).collect(),
        Coding::Huffman => {
            let lengths =
                huffman::code_lengths(&frequencies(symbols, width), huffman::MAX_CODE_LEN);
            return write_huffman(symbols, width, &lengths, out);
        }
    };
    write_header(coding, width, symbols.len() as u64, &data, out);
}

fn write_header(coding: Coding, width: u8, count: u64, data: &[u8], out: &mut Vec<u8>) {
    out.push(coding as u8);
    out.push(width);
    write_uleb128(count, out);
    write_uleb128(data.len() as u64, out);
    out.extend_from_slice(data);
}

/// Append a Huffman-coded stream with the given code lengths (symbol `s` has `lengths[s]`).
/// [`write()`] passes optimal lengths; conformance fixtures pass hand-made ones.
pub fn write_huffman(symbols: &[u16], width: u8, lengths: &[u8], out: &mut Vec<u8>) {
    // Lengths up to the last used symbol, each in just enough bits for the longest.
    let n = lengths.iter().rposition(|&l| l > 0).map_or(0, |i| i + 1);
    let max = lengths.iter().copied().max().unwrap_or(0);
    let len_bits = if max == 0 {
        0
    } else {
        8 - max.leading_zeros() as u8
    };
    let mut data = Vec::new();
    write_uleb128(n as u64, &mut data);
    data.push(len_bits);
    if len_bits > 0 {
        data.extend(pack_bits(
            lengths[..n].iter().map(|&l| l as u16),
            len_bits,
            n,
        ));
    }
    data.extend_from_slice(&huffman::encode(symbols, &lengths[..n]));
    write_header(Coding::Huffman, width, symbols.len() as u64, &data, out);
}

/// The stored size of `symbols` in a coding.
pub fn size(symbols: &[u16], width: u8, coding: Coding) -> usize {
    let mut v = Vec::new();
    write(symbols, width, coding, &mut v);
    v.len()
}

/// The smallest of the codings in `allowed`.
pub fn best_coding(symbols: &[u16], width: u8, allowed: &[Coding]) -> Coding {
    *allowed
        .iter()
        .min_by_key(|&&c| size(symbols, width, c))
        .expect("at least one coding")
}

/// Read one stream of exactly `expected` symbols (the caller knows how many it needs), each
/// below `2^width_expected`. `huffman_allowed` says whether the chain lists the huffman stage.
/// `what` names the stream in errors.
pub fn read(
    c: &mut Cursor<'_>,
    what: &str,
    width_expected: u8,
    expected: u64,
    huffman_allowed: bool,
) -> Result<Stream> {
    read_counted(
        c,
        what,
        width_expected,
        Some(expected),
        expected,
        huffman_allowed,
    )
}

/// Read one stream of at most `max` symbols (relative sparse gaps, spec §5.7: the bound
/// included), otherwise as [`read`].
pub fn read_at_most(
    c: &mut Cursor<'_>,
    what: &str,
    width_expected: u8,
    max: u64,
    huffman_allowed: bool,
) -> Result<Stream> {
    read_counted(c, what, width_expected, None, max, huffman_allowed)
}

/// The stream header's fields are each checked as soon as they are read, in stored order
/// (spec §5.4): `coding`, `width`, `count` (exactly `expected`, or at most `max`), `data_len`.
fn read_counted(
    c: &mut Cursor<'_>,
    what: &str,
    width_expected: u8,
    expected: Option<u64>,
    max: u64,
    huffman_allowed: bool,
) -> Result<Stream> {
    let at = c.offset();
    if !(1..=MAX_WIDTH).contains(&width_expected) {
        // Every stage passes a width it has checked; refuse rather than trust a caller.
        return Err(Error::format(
            ErrorCode::DecodeError,
            format!("{what}.width"),
            at,
            format!("stream widths are 1..={MAX_WIDTH}, asked for {width_expected}"),
        ));
    }
    let err = |code, field: &str, offset: u64, detail: String| {
        Error::format(code, format!("{what}.{field}"), offset, detail)
    };
    let coding_byte = c.u8(|| format!("{what}.coding"))?;
    let coding = match coding_byte {
        0 => Coding::Packed,
        1 => Coding::Bytes,
        2 if huffman_allowed => Coding::Huffman,
        2 => {
            return Err(err(
                ErrorCode::BadChain,
                "coding",
                at,
                "a Huffman-coded stream in a chain without the huffman stage".into(),
            ));
        }
        other => {
            return Err(err(
                ErrorCode::BadValue,
                "coding",
                at,
                format!("unknown stream coding {other}"),
            ));
        }
    };
    let width = c.u8(|| format!("{what}.width"))?;
    if width != width_expected {
        return Err(err(
            ErrorCode::DecodeError,
            "width",
            at + 1,
            format!("stream width must be {width_expected}, found {width}"),
        ));
    }
    let count_at = c.offset();
    let count = read_uleb128(c, &|| format!("{what}.count"))?;
    match expected {
        Some(expected) if count != expected => {
            return Err(err(
                ErrorCode::DecodeError,
                "count",
                count_at,
                format!("stream must hold {expected} symbols, found {count}"),
            ));
        }
        None if count > max => {
            return Err(err(
                ErrorCode::DecodeError,
                "count",
                count_at,
                format!("stream may hold at most {max} symbols, found {count}"),
            ));
        }
        _ => {}
    }
    let len_at = c.offset();
    let data_len = read_uleb128(c, &|| format!("{what}.data_len"))?;
    if data_len > c.remaining() as u64 {
        return Err(err(
            ErrorCode::Truncated,
            "data_len",
            len_at,
            format!("{data_len} bytes of data, {} left", c.remaining()),
        ));
    }
    let data_at = c.offset();
    let data = c.bytes(data_len as usize, || format!("{what}.data"))?;
    let fail = |detail: String| err(ErrorCode::DecodeError, "data", data_at, detail);
    let exact = |want: u64| -> Result<()> {
        if want != data_len {
            return Err(fail(format!(
                "{} coding of {count} symbols takes {want} bytes, found {data_len}",
                coding.name()
            )));
        }
        Ok(())
    };
    let mut huffman_lengths = None;
    let symbols: Vec<u16> = match coding {
        Coding::Packed => {
            let bits_needed = count
                .checked_mul(width as u64)
                .ok_or_else(|| fail("size overflows".into()))?;
            exact(bits_needed.div_ceil(8))?;
            if !bits::zero_from(data, bits_needed) {
                return Err(fail(
                    "padding bits after the last symbol must be zero".into(),
                ));
            }
            let mut r = BitReader::new(data);
            (0..count).map(|_| r.read(width) as u16).collect()
        }
        Coding::Bytes => {
            let per = if width <= 8 { 1 } else { 2 };
            exact(
                count
                    .checked_mul(per)
                    .ok_or_else(|| fail("size overflows".into()))?,
            )?;
            let symbols: Vec<u16> = if per == 1 {
                data.iter().map(|&b| b as u16).collect()
            } else {
                data.chunks_exact(2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]))
                    .collect()
            };
            if let Some(i) = symbols.iter().position(|&s| (s as u32) >> width != 0) {
                return Err(fail(format!(
                    "symbol {i} is {}, not below 2^{width}",
                    symbols[i]
                )));
            }
            symbols
        }
        Coding::Huffman => {
            let mut h = Cursor::new(data, data_at);
            let n_at = h.offset();
            let n = read_uleb128(&mut h, &|| format!("{what}.huffman.n"))?;
            if n > 1 << width {
                return Err(err(
                    ErrorCode::DecodeError,
                    "huffman.n",
                    n_at,
                    format!("{n} code lengths for an alphabet of 2^{width}"),
                ));
            }
            let bits_at = h.offset();
            let len_bits = h.u8(|| format!("{what}.huffman.len_bits"))?;
            if len_bits > MAX_LEN_BITS {
                return Err(err(
                    ErrorCode::DecodeError,
                    "huffman.len_bits",
                    bits_at,
                    format!("len_bits must be 0..={MAX_LEN_BITS}, found {len_bits}"),
                ));
            }
            let table_len = (n * len_bits as u64).div_ceil(8);
            let table = h.bytes(table_len as usize, || format!("{what}.huffman.lengths"))?;
            if !bits::zero_from(table, n * len_bits as u64) {
                return Err(err(
                    ErrorCode::DecodeError,
                    "huffman.lengths",
                    bits_at + 1,
                    "padding bits after the last code length must be zero".into(),
                ));
            }
            let lengths: Vec<u8> = if len_bits == 0 {
                vec![0; n as usize]
            } else {
                let mut r = BitReader::new(table);
                (0..n).map(|_| r.read(len_bits) as u8).collect()
            };
            let bits = h.bytes(h.remaining(), || format!("{what}.huffman.bits"))?;
            let hfail = |detail: String| err(ErrorCode::DecodeError, "huffman", data_at, detail);
            let decoder = huffman::Decoder::new(&lengths, &hfail)?;
            // A stream of one symbol stores no bits, so `count` alone sizes its output: the
            // caller checked that against the memory budget, and the allocation itself is
            // fallible, so an allocator that cannot give it is an error, not an abort.
            let mut symbols = Vec::new();
            symbols.try_reserve_exact(count as usize).map_err(|_| {
                Error::io(
                    format!("{what}: allocating {count} symbols"),
                    std::io::ErrorKind::OutOfMemory.into(),
                )
            })?;
            decoder.decode(bits, count, &hfail, |s| symbols.push(s))?;
            huffman_lengths = Some(lengths);
            symbols
        }
    };
    Ok(Stream {
        symbols,
        coding,
        width,
        stored_bytes: c.offset() - at,
        huffman_lengths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(symbols: &[u16], width: u8, coding: Coding) -> Vec<u8> {
        let mut out = Vec::new();
        write(symbols, width, coding, &mut out);
        let mut c = Cursor::new(&out, 0);
        let s = read(&mut c, "s", width, symbols.len() as u64, true).unwrap();
        assert!(c.is_empty());
        assert_eq!(s.symbols, symbols);
        assert_eq!(s.stored_bytes, out.len() as u64);
        out
    }

    #[test]
    fn every_coding_round_trips() {
        let symbols: Vec<u16> = (0..1000u32).map(|i| ((i * 7919) % 31) as u16).collect();
        for coding in [Coding::Packed, Coding::Bytes, Coding::Huffman] {
            round_trip(&symbols, 5, coding);
            round_trip(&[], 5, coding);
            round_trip(&[3; 17], 5, coding);
        }
        let wide: Vec<u16> = (0..300u32).map(|i| (i * 211 % 65536) as u16).collect();
        for coding in [Coding::Packed, Coding::Bytes, Coding::Huffman] {
            round_trip(&wide, 16, coding);
        }
        // Packed: 2 header bytes, LEB128 1000 (2 bytes), LEB128 625 (2 bytes), 625 data bytes.
        assert_eq!(
            round_trip(&symbols, 5, Coding::Packed).len(),
            2 + 2 + 2 + 625
        );
    }

    #[test]
    fn leb128_is_shortest_form_only() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            write_uleb128(v, &mut out);
            assert_eq!(
                read_uleb128(&mut Cursor::new(&out, 0), &|| "v".into()).unwrap(),
                v
            );
        }
        let f = || "v".to_string();
        assert!(
            read_uleb128(&mut Cursor::new(&[0x80, 0x00], 0), &f).is_err(),
            "overlong zero"
        );
        assert!(
            read_uleb128(&mut Cursor::new(&[0xff; 10], 0), &f).is_err(),
            "too many bits"
        );
        assert!(
            read_uleb128(&mut Cursor::new(&[0x80], 0), &f).is_err(),
            "truncated"
        );
    }

    #[test]
    fn rejects_mismatches() {
        let mut out = Vec::new();
        write(&[1, 2, 3], 4, Coding::Huffman, &mut out);
        let read_with = |bytes: &[u8], width, n, huff| {
            read(&mut Cursor::new(bytes, 0), "s", width, n, huff)
                .map(|_| ())
                .unwrap_err()
                .code()
        };
        assert_eq!(read_with(&out, 4, 3, false), Some(ErrorCode::BadChain));
        assert_eq!(read_with(&out, 5, 3, true), Some(ErrorCode::DecodeError));
        assert_eq!(read_with(&out, 4, 4, true), Some(ErrorCode::DecodeError));
        assert_eq!(
            read_with(&out[..out.len() - 1], 4, 3, true),
            Some(ErrorCode::Truncated)
        );
        let mut bytes = Vec::new();
        write(&[1, 2], 3, Coding::Bytes, &mut bytes);
        let n = bytes.len();
        bytes[n - 1] = 9; // not below 2^3
        assert_eq!(read_with(&bytes, 3, 2, true), Some(ErrorCode::DecodeError));
    }
}
