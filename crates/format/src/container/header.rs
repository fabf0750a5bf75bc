//! The fixed 64-byte file header (spec §2).

use crate::cursor::{Cursor, f};
use crate::error::{Error, ErrorCode, Result};
use crate::limits::{Limits, align64};

pub const MAGIC: [u8; 4] = *b"CXRM";
pub const BYTE_ORDER: u32 = 0x0102_0304;
pub const HEADER_LEN: usize = 64;
/// Bytes of the header covered by `header_crc` (everything before the CRC itself).
pub const HEADER_CRC_SPAN: usize = 60;
pub const VERSION_MAJOR: u16 = 1;
/// The newest minor version this crate writes and reads (spec §9).
pub const VERSION_MINOR: u16 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version_major: u16,
    pub version_minor: u16,
    pub flags: u32,
    /// Bit `i` set when some tensor uses encoding stage id `i`.
    pub must_understand: u64,
    pub table_offset: u64,
    pub table_size: u64,
    pub data_offset: u64,
    pub file_size: u64,
    pub header_crc: u32,
}

impl Header {
    /// Parse and check the header against the real file length, in the order spec §2 gives.
    /// The CRC is checked by the caller, which has the table bytes.
    pub fn parse(file: &[u8], limits: &Limits) -> Result<Header> {
        if file.len() < HEADER_LEN {
            return Err(Error::format(
                ErrorCode::Truncated,
                "header",
                file.len() as u64,
                format!("file is {} bytes, a header needs {HEADER_LEN}", file.len()),
            ));
        }
        let mut c = Cursor::new(&file[..HEADER_LEN], 0);
        let magic = c.bytes(4, f("header.magic"))?;
        if magic != MAGIC {
            return Err(Error::format(
                ErrorCode::BadMagic,
                "header.magic",
                0,
                format!(
                    "expected \"CXRM\", found {}",
                    crate::text::escape_bytes(magic)
                ),
            ));
        }
        let byte_order = c.u32(f("header.byte_order"))?;
        if byte_order == BYTE_ORDER.swap_bytes() {
            return Err(Error::format(
                ErrorCode::ByteSwapped,
                "header.byte_order",
                4,
                "file was written big-endian; .cxrm is little-endian throughout",
            ));
        }
        if byte_order != BYTE_ORDER {
            return Err(Error::format(
                ErrorCode::BadMagic,
                "header.byte_order",
                4,
                format!("expected 0x{BYTE_ORDER:08x}, found 0x{byte_order:08x}"),
            ));
        }
        let version_major = c.u16(f("header.version_major"))?;
        let version_minor = c.u16(f("header.version_minor"))?;
        if version_major != VERSION_MAJOR {
            return Err(Error::format(
                ErrorCode::UnsupportedVersion,
                "header.version_major",
                8,
                format!(
                    "file is format {version_major}.{version_minor}; this reader reads {VERSION_MAJOR}.x"
                ),
            ));
        }
        let flags = c.u32(f("header.flags"))?;
        let must_understand = c.u64(f("header.must_understand"))?;
        let table_offset = c.u64(f("header.table_offset"))?;
        let table_size = c.u64(f("header.table_size"))?;
        let data_offset = c.u64(f("header.data_offset"))?;
        let file_size = c.u64(f("header.file_size"))?;
        let reserved = c.u32(f("header.reserved"))?;
        let header_crc = c.u32(f("header.header_crc"))?;
        if flags != 0 {
            return Err(Error::format(
                ErrorCode::ReservedNonzero,
                "header.flags",
                12,
                format!("flags 0x{flags:08x}; no flag is defined in format 1.x"),
            ));
        }
        if reserved != 0 {
            return Err(Error::format(
                ErrorCode::ReservedNonzero,
                "header.reserved",
                56,
                "must be 0",
            ));
        }
        let actual = file.len() as u64;
        if file_size != actual {
            let code = if file_size > actual {
                ErrorCode::Truncated
            } else {
                ErrorCode::SizeMismatch
            };
            return Err(Error::format(
                code,
                "header.file_size",
                48,
                format!("header says {file_size} bytes, file has {actual}"),
            ));
        }
        if table_offset != HEADER_LEN as u64 {
            return Err(Error::format(
                ErrorCode::OutOfBounds,
                "header.table_offset",
                24,
                format!("must be {HEADER_LEN}, found {table_offset}"),
            ));
        }
        if table_size > limits.table_size {
            return Err(Error::format(
                ErrorCode::LimitExceeded,
                "header.table_size",
                32,
                format!(
                    "{table_size} bytes exceeds the limit of {}",
                    limits.table_size
                ),
            ));
        }
        let table_end = HEADER_LEN as u64 + table_size;
        if table_end > file_size {
            return Err(Error::format(
                ErrorCode::OutOfBounds,
                "header.table_size",
                32,
                format!("table ends at {table_end}, past the end of the {file_size}-byte file"),
            ));
        }
        let expected_data = align64(table_end).expect("bounded by table limit");
        if data_offset != expected_data {
            return Err(Error::format(
                ErrorCode::BadLayout,
                "header.data_offset",
                40,
                format!("must be align64(64 + table_size) = {expected_data}, found {data_offset}"),
            ));
        }
        if data_offset > file_size {
            return Err(Error::format(
                ErrorCode::OutOfBounds,
                "header.data_offset",
                40,
                format!("{data_offset} is past the end of the {file_size}-byte file"),
            ));
        }
        Ok(Header {
            version_major,
            version_minor,
            flags,
            must_understand,
            table_offset,
            table_size,
            data_offset,
            file_size,
            header_crc,
        })
    }

    /// The 64 header bytes, with `header_crc` as stored in `self`.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..8].copy_from_slice(&BYTE_ORDER.to_le_bytes());
        out[8..10].copy_from_slice(&self.version_major.to_le_bytes());
        out[10..12].copy_from_slice(&self.version_minor.to_le_bytes());
        out[12..16].copy_from_slice(&self.flags.to_le_bytes());
        out[16..24].copy_from_slice(&self.must_understand.to_le_bytes());
        out[24..32].copy_from_slice(&self.table_offset.to_le_bytes());
        out[32..40].copy_from_slice(&self.table_size.to_le_bytes());
        out[40..48].copy_from_slice(&self.data_offset.to_le_bytes());
        out[48..56].copy_from_slice(&self.file_size.to_le_bytes());
        // 56..60 reserved, zero.
        out[60..64].copy_from_slice(&self.header_crc.to_le_bytes());
        out
    }
}

/// CRC-32 over the header's first 60 bytes followed by the table (spec §2).
pub fn header_crc(header_bytes: &[u8], table: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&header_bytes[..HEADER_CRC_SPAN]);
    h.update(table);
    h.finalize()
}
