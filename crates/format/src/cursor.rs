//! Bounds-checked little-endian reads that know their absolute file offset.
//!
//! Every read names the field being read, so every failure becomes a precise [`Error`] with
//! the field and its byte offset in the file, as the spec's error codes (§10) need. The reads
//! are plain `from_le_bytes` on bounds-checked slices: a parser-combinator library would add
//! nothing to fixed-width little-endian fields, and its errors carry neither name nor offset.

use crate::error::{Error, ErrorCode, Result};

#[derive(Clone)]
pub struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    /// Absolute file offset of `data[0]`.
    base: u64,
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8], base: u64) -> Self {
        Cursor { data, pos: 0, base }
    }

    /// Absolute file offset of the next byte to be read.
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The next `N` bytes, or a `truncated` error naming the field; consumes nothing on error.
    fn array<const N: usize>(&mut self, field: &dyn Fn() -> String) -> Result<[u8; N]> {
        match self.data.get(self.pos..self.pos + N) {
            Some(bytes) => {
                self.pos += N;
                Ok(bytes.try_into().expect("N bytes"))
            }
            None => Err(Error::format(
                ErrorCode::Truncated,
                field(),
                self.offset(),
                format!("needs more bytes than the {} left", self.remaining()),
            )),
        }
    }

    pub fn u8(&mut self, field: impl Fn() -> String) -> Result<u8> {
        Ok(u8::from_le_bytes(self.array(&field)?))
    }
    pub fn u16(&mut self, field: impl Fn() -> String) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(&field)?))
    }
    pub fn u32(&mut self, field: impl Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(&field)?))
    }
    pub fn u64(&mut self, field: impl Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(&field)?))
    }
    pub fn i64(&mut self, field: impl Fn() -> String) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array(&field)?))
    }
    pub fn f64(&mut self, field: impl Fn() -> String) -> Result<f64> {
        Ok(f64::from_le_bytes(self.array(&field)?))
    }

    /// `len` raw bytes, borrowed from the input.
    pub fn bytes(&mut self, len: usize, field: impl Fn() -> String) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.data.len());
        match end {
            Some(end) => {
                let bytes = &self.data[self.pos..end];
                self.pos = end;
                Ok(bytes)
            }
            None => Err(Error::format(
                ErrorCode::Truncated,
                field(),
                self.offset(),
                format!("needs {len} bytes, {} left", self.remaining()),
            )),
        }
    }

    /// `len` bytes that must be UTF-8 text.
    pub fn str(&mut self, len: usize, field: impl Fn() -> String) -> Result<&'a str> {
        let at = self.offset();
        let bytes = self.bytes(len, &field)?;
        std::str::from_utf8(bytes)
            .map_err(|e| Error::format(ErrorCode::BadUtf8, field(), at, e.to_string()))
    }
}

/// A field name that is a fixed string.
pub fn f(name: &'static str) -> impl Fn() -> String {
    move || name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_tracks_offsets() {
        let data = [1u8, 2, 0, 3, 0, 0, 0, 9];
        let mut c = Cursor::new(&data, 100);
        assert_eq!(c.u8(f("a")).unwrap(), 1);
        assert_eq!(c.u16(f("b")).unwrap(), 2);
        assert_eq!(c.offset(), 103);
        assert_eq!(c.u32(f("c")).unwrap(), 3);
        let err = c.u16(f("d")).unwrap_err();
        match err {
            Error::Format(e) => {
                assert_eq!(e.code, ErrorCode::Truncated);
                assert_eq!(e.field, "d");
                assert_eq!(e.offset, 107);
            }
            other => panic!("unexpected {other:?}"),
        }
        // A failed read consumes nothing.
        assert_eq!(c.remaining(), 1);
    }

    #[test]
    fn rejects_invalid_utf8_with_its_offset() {
        let data = [b'o', b'k', 0xff];
        let mut c = Cursor::new(&data, 10);
        assert_eq!(c.str(2, f("s")).unwrap(), "ok");
        let err = c.str(1, f("t")).unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::BadUtf8));
    }
}
