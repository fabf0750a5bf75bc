//! Bounds-checked little-endian reads that know their absolute file offset.
//!
//! The primitives are nom's; this wrapper adds what nom's errors lack for a file format: the
//! name of the field being read and its byte offset in the file, so every failure becomes a
//! precise [`Error`].

use crate::error::{Error, ErrorCode, Result};
use nom::number::complete::{le_f64, le_i64, le_u8, le_u16, le_u32, le_u64};

type NomResult<'a, T> = nom::IResult<&'a [u8], T, nom::error::Error<&'a [u8]>>;

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

    fn run<T>(
        &mut self,
        field: &dyn Fn() -> String,
        parser: fn(&'a [u8]) -> NomResult<'a, T>,
    ) -> Result<T> {
        let rest = &self.data[self.pos..];
        match parser(rest) {
            Ok((after, value)) => {
                self.pos += rest.len() - after.len();
                Ok(value)
            }
            Err(_) => Err(Error::format(
                ErrorCode::Truncated,
                field(),
                self.offset(),
                format!("needs more bytes than the {} left", self.remaining()),
            )),
        }
    }

    pub fn u8(&mut self, field: impl Fn() -> String) -> Result<u8> {
        self.run(&field, le_u8)
    }
    pub fn u16(&mut self, field: impl Fn() -> String) -> Result<u16> {
        self.run(&field, le_u16)
    }
    pub fn u32(&mut self, field: impl Fn() -> String) -> Result<u32> {
        self.run(&field, le_u32)
    }
    pub fn u64(&mut self, field: impl Fn() -> String) -> Result<u64> {
        self.run(&field, le_u64)
    }
    pub fn i64(&mut self, field: impl Fn() -> String) -> Result<i64> {
        self.run(&field, le_i64)
    }
    pub fn f64(&mut self, field: impl Fn() -> String) -> Result<f64> {
        self.run(&field, le_f64)
    }

    /// `len` raw bytes, borrowed from the input.
    pub fn bytes(&mut self, len: usize, field: impl Fn() -> String) -> Result<&'a [u8]> {
        let rest = &self.data[self.pos..];
        let taken: NomResult<'a, &'a [u8]> = nom::bytes::complete::take(len)(rest);
        match taken {
            Ok((_, bytes)) => {
                self.pos += len;
                Ok(bytes)
            }
            Err(_) => Err(Error::format(
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
