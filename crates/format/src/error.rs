//! One error type for the whole library.
//!
//! Every way a file can be wrong maps to a stable [`ErrorCode`] (spec §10), the field that was
//! wrong, and the byte offset of that field, so that a user handed a bad file can see exactly
//! where it went wrong and other readers can check themselves against `fixtures/invalid/`.

use std::fmt;

/// Stable, spec-defined names for the ways a file can be invalid (spec §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Truncated,
    BadMagic,
    ByteSwapped,
    UnsupportedVersion,
    ReservedNonzero,
    SizeMismatch,
    OutOfBounds,
    LimitExceeded,
    BadLayout,
    NonzeroPadding,
    CrcMismatch,
    BadDtype,
    BadChain,
    UnknownEncoding,
    UnknownSection,
    DuplicateSection,
    DuplicateName,
    DuplicateKey,
    BadUtf8,
    BadValue,
    BadGraph,
    DecodeError,
}

impl ErrorCode {
    /// The spec's snake_case name, as used in `fixtures/invalid/expected.json`.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            Truncated => "truncated",
            BadMagic => "bad_magic",
            ByteSwapped => "byte_swapped",
            UnsupportedVersion => "unsupported_version",
            ReservedNonzero => "reserved_nonzero",
            SizeMismatch => "size_mismatch",
            OutOfBounds => "out_of_bounds",
            LimitExceeded => "limit_exceeded",
            BadLayout => "bad_layout",
            NonzeroPadding => "nonzero_padding",
            CrcMismatch => "crc_mismatch",
            BadDtype => "bad_dtype",
            BadChain => "bad_chain",
            UnknownEncoding => "unknown_encoding",
            UnknownSection => "unknown_section",
            DuplicateSection => "duplicate_section",
            DuplicateName => "duplicate_name",
            DuplicateKey => "duplicate_key",
            BadUtf8 => "bad_utf8",
            BadValue => "bad_value",
            BadGraph => "bad_graph",
            DecodeError => "decode_error",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A malformed file: what is wrong, which field, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    pub code: ErrorCode,
    /// Dotted path of the offending field, e.g. `tensor[3].dims[1]` or `header.table_size`.
    pub field: String,
    /// Byte offset of that field from the start of the file.
    pub offset: u64,
    pub detail: String,
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at byte {} (0x{:x}), field {}: {}",
            self.code, self.offset, self.offset, self.field, self.detail
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid .cxrm file: {0}")]
    Format(FormatError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A request the file is fine with but the caller got wrong (no such tensor, wrong dtype...).
    #[error("{0}")]
    Usage(String),
    /// A well-formed file whose model cannot run: a graph that references a missing tensor,
    /// shapes that do not chain, an operator this runtime lacks, an input it cannot take.
    #[error("cannot run model: {0}")]
    Model(String),
    /// A valid file that needs more memory than the budget allows ([`crate::budget`]). Not an
    /// invalid file: with a larger budget, or on a larger machine, it reads.
    #[error(
        "{what} needs {needed} bytes, more than the memory budget of {budget} bytes (--max-memory)"
    )]
    OverBudget {
        what: String,
        needed: u64,
        budget: u64,
    },
}

impl Error {
    pub fn format(
        code: ErrorCode,
        field: impl Into<String>,
        offset: u64,
        detail: impl Into<String>,
    ) -> Self {
        Error::Format(FormatError {
            code,
            field: field.into(),
            offset,
            detail: detail.into(),
        })
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The spec error code, when this is a format error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Format(e) => Some(e.code),
            _ => None,
        }
    }

    /// The byte offset a format error names.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Error::Format(e) => Some(e.offset),
            _ => None,
        }
    }

    /// The message for something that is not (yet) a file, such as a graph being written from
    /// JSON: a format error's detail and field, without "invalid .cxrm file" or a byte offset
    /// that would point into nothing.
    pub fn without_offset(&self) -> String {
        match self {
            Error::Format(e) => format!("{} ({})", e.detail, e.field),
            other => other.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
