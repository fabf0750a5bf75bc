//! `sparse` (spec §5.7): a pruned tensor as the positions of its surviving weights plus their
//! values. Two position layouts:
//!
//! * **relative** (Deep Compression's): each survivor stores the gap since the previous one in
//!   `b` bits; a gap too large for `b` bits is bridged by escape symbols (`2^b - 1`, "skip
//!   2^b - 1 positions"), which, unlike the paper's filler zeros, store no value;
//! * **CSR**: per row (the first dimension) a survivor count, then each survivor's column.
//!
//! The encoder builds both and keeps the smaller; `tools/` and the spec give the measurements.

use super::stream::{self, Coding, Stream};
use crate::cursor::Cursor;
use crate::error::{Error, ErrorCode, Result};

pub const PARAMS_LEN: usize = 12;

/// A decoded stream and its role (`gaps`, `row_counts`, `columns`).
pub type NamedStream = (&'static str, Stream);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Relative { index_bits: u8 },
    Csr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub layout: Layout,
    pub nnz: u64,
}

impl Params {
    pub fn to_bytes(self) -> Vec<u8> {
        let (layout, bits) = match self.layout {
            Layout::Relative { index_bits } => (0u8, index_bits),
            Layout::Csr => (1, 0),
        };
        let mut v = vec![layout, bits, 0, 0];
        v.extend_from_slice(&self.nnz.to_le_bytes());
        v
    }

    /// Check the parameters in their stored order (spec §5.7).
    pub fn parse(params: &[u8], elements: u64, field: &str, offset: u64) -> Result<Params> {
        let bad = |detail: String| {
            Error::format(
                ErrorCode::BadChain,
                format!("{field}.params"),
                offset,
                detail,
            )
        };
        if params.len() != PARAMS_LEN {
            return Err(bad(format!(
                "sparse takes {PARAMS_LEN} parameter bytes, found {}",
                params.len()
            )));
        }
        let layout = match (params[0], params[1]) {
            (0, b @ 2..=16) => Layout::Relative { index_bits: b },
            (0, b) => {
                return Err(bad(format!(
                    "relative index bits must be 2..=16, found {b}"
                )));
            }
            (1, 0) => Layout::Csr,
            (1, b) => return Err(bad(format!("CSR takes index bits 0, found {b}"))),
            (l, _) => return Err(bad(format!("unknown sparse layout {l}"))),
        };
        if params[2..4] != [0, 0] {
            return Err(Error::format(
                ErrorCode::ReservedNonzero,
                format!("{field}.params.reserved"),
                offset + 2,
                "must be 0",
            ));
        }
        let nnz = u64::from_le_bytes(params[4..12].try_into().expect("8 bytes"));
        if nnz > elements {
            return Err(Error::format(
                ErrorCode::DecodeError,
                format!("{field}.params.nnz"),
                offset + 4,
                format!("{nnz} survivors in a tensor of {elements} elements"),
            ));
        }
        Ok(Params { layout, nnz })
    }
}

/// Bits needed to write values 0..=max.
pub fn bits_for(max: u64) -> u8 {
    (64 - max.leading_zeros()).max(1) as u8
}

/// Rows and columns of the 2-D view CSR uses: the first dimension by the rest.
pub fn csr_shape(shape: &[u64], elements: u64) -> (u64, u64) {
    match shape.first() {
        // No elements, no rows: a row count per row of an `[n, 0]` tensor would let a tiny
        // file ask for billions of symbols.
        _ if elements == 0 => (0, 0),
        None => (1, elements),
        Some(&rows) => (rows, elements / rows),
    }
}

/// Relative-index symbols for sorted survivor positions.
pub fn relative_symbols(positions: &[u64], index_bits: u8) -> Vec<u16> {
    let escape = (1u64 << index_bits) - 1;
    let mut out = Vec::with_capacity(positions.len());
    let mut next = 0u64;
    for &p in positions {
        let mut gap = p - next;
        while gap >= escape {
            out.push(escape as u16);
            gap -= escape;
        }
        out.push(gap as u16);
        next = p + 1;
    }
    out
}

/// CSR symbols: (per-row counts, column of each survivor).
pub fn csr_symbols(positions: &[u64], rows: u64, cols: u64) -> (Vec<u16>, Vec<u16>) {
    let mut counts = vec![0u16; rows as usize];
    let mut columns = Vec::with_capacity(positions.len());
    for &p in positions {
        counts[(p / cols) as usize] += 1;
        columns.push((p % cols) as u16);
    }
    (counts, columns)
}

/// Whether CSR can represent a tensor of this shape (row counts and columns fit 16 bits).
pub fn csr_fits(rows: u64, cols: u64) -> bool {
    cols <= u16::MAX as u64 && rows <= u32::MAX as u64
}

/// Write the position streams; the caller appends the values after them.
pub fn write_positions(
    positions: &[u64],
    shape: &[u64],
    elements: u64,
    layout: Layout,
    coding: &dyn Fn(&[u16], u8) -> Coding,
    out: &mut Vec<u8>,
) {
    match layout {
        Layout::Relative { index_bits } => {
            let symbols = relative_symbols(positions, index_bits);
            stream::write(&symbols, index_bits, coding(&symbols, index_bits), out);
        }
        Layout::Csr => {
            let (rows, cols) = csr_shape(shape, elements);
            let (counts, columns) = csr_symbols(positions, rows, cols);
            let cw = bits_for(cols);
            stream::write(&counts, cw, coding(&counts, cw), out);
            let colw = bits_for(cols.saturating_sub(1));
            stream::write(&columns, colw, coding(&columns, colw), out);
        }
    }
}

/// Read the position streams and return the survivors' positions, strictly increasing and
/// below `elements`, exactly `params.nnz` of them.
pub fn read_positions(
    c: &mut Cursor<'_>,
    params: &Params,
    shape: &[u64],
    elements: u64,
    huffman: bool,
    what: &str,
) -> Result<(Vec<u64>, Vec<NamedStream>)> {
    let at = c.offset();
    let fail = |detail: String| {
        Error::format(
            ErrorCode::DecodeError,
            format!("{what}.positions"),
            at,
            detail,
        )
    };
    match params.layout {
        Layout::Relative { index_bits } => {
            // The symbol count is not known before reading; it is at most nnz plus the escapes
            // needed to cross the tensor (spec §5.7, the bound included), judged when the
            // stream's count is read, after its coding and width.
            let escape = (1u64 << index_bits) - 1;
            let max_symbols = params.nnz + elements / escape + 1;
            let gaps =
                stream::read_at_most(c, &format!("{what}.gaps"), index_bits, max_symbols, huffman)?;
            let symbols = &gaps.symbols;
            let mut positions = Vec::with_capacity(params.nnz.min(symbols.len() as u64) as usize);
            let mut next = 0u64;
            for &s in symbols {
                let s = s as u64;
                if s == escape {
                    next += escape;
                    continue;
                }
                let p = next + s;
                if p >= elements {
                    return Err(fail(format!(
                        "gap stream runs past the tensor's {elements} elements"
                    )));
                }
                positions.push(p);
                next = p + 1;
            }
            if positions.len() as u64 != params.nnz {
                return Err(fail(format!(
                    "gap stream gives {} survivors, nnz says {}",
                    positions.len(),
                    params.nnz
                )));
            }
            Ok((positions, vec![("gaps", gaps)]))
        }
        Layout::Csr => {
            let (rows, cols) = csr_shape(shape, elements);
            if !csr_fits(rows, cols) {
                return Err(fail(format!("CSR cannot describe a {rows}x{cols} view")));
            }
            let counts = stream::read(
                c,
                &format!("{what}.row_counts"),
                bits_for(cols),
                rows,
                huffman,
            )?;
            let total: u64 = counts.symbols.iter().map(|&n| n as u64).sum();
            if total != params.nnz {
                return Err(fail(format!(
                    "row counts add up to {total}, nnz says {}",
                    params.nnz
                )));
            }
            let columns = stream::read(
                c,
                &format!("{what}.columns"),
                bits_for(cols.saturating_sub(1)),
                params.nnz,
                huffman,
            )?;
            let mut positions = Vec::with_capacity(columns.symbols.len());
            let mut k = 0usize;
            for (row, &n) in counts.symbols.iter().enumerate() {
                let mut last: Option<u16> = None;
                for &col in &columns.symbols[k..k + n as usize] {
                    if col as u64 >= cols || last.is_some_and(|l| col <= l) {
                        return Err(fail(format!(
                            "row {row}: columns must increase and stay below {cols}"
                        )));
                    }
                    last = Some(col);
                    positions.push(row as u64 * cols + col as u64);
                }
                k += n as usize;
            }
            Ok((
                positions,
                vec![("row_counts", counts), ("columns", columns)],
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(positions: &[u64], shape: &[u64], layout: Layout) {
        let elements: u64 = shape.iter().product();
        let mut out = Vec::new();
        write_positions(
            positions,
            shape,
            elements,
            layout,
            &|_, _| Coding::Packed,
            &mut out,
        );
        let params = Params {
            layout,
            nnz: positions.len() as u64,
        };
        let (back, _) = read_positions(
            &mut Cursor::new(&out, 0),
            &params,
            shape,
            elements,
            false,
            "t",
        )
        .unwrap();
        assert_eq!(back, positions);
    }

    #[test]
    fn both_layouts_round_trip_including_long_gaps() {
        let positions = vec![0, 1, 5, 40, 41, 500, 999];
        for layout in [
            Layout::Relative { index_bits: 5 },
            Layout::Relative { index_bits: 2 },
            Layout::Relative { index_bits: 8 },
            Layout::Csr,
        ] {
            round_trip(&positions, &[10, 100], layout);
            round_trip(&[], &[10, 100], layout);
            round_trip(&(0..1000).collect::<Vec<_>>(), &[10, 100], layout);
            round_trip(&[999], &[10, 100], layout);
        }
    }

    #[test]
    fn escapes_bridge_gaps_without_values() {
        // Gap 40 with 5-bit symbols: one escape (31) then 9.
        assert_eq!(relative_symbols(&[40], 5), vec![31, 9]);
        assert_eq!(relative_symbols(&[31], 5), vec![31, 0]);
        assert_eq!(relative_symbols(&[30], 5), vec![30]);
    }

    #[test]
    fn rejects_streams_past_the_tensor_and_wrong_counts() {
        let mut out = Vec::new();
        stream::write(&[3, 3], 5, Coding::Packed, &mut out);
        let params = Params {
            layout: Layout::Relative { index_bits: 5 },
            nnz: 2,
        };
        // Positions 3 and 7 in a tensor of 6 elements.
        let err =
            read_positions(&mut Cursor::new(&out, 0), &params, &[6], 6, false, "t").unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::DecodeError));
        let params3 = Params { nnz: 3, ..params };
        let err = read_positions(&mut Cursor::new(&out, 0), &params3, &[100], 100, false, "t")
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::DecodeError));
        assert!(
            Params::parse(
                &Params {
                    layout: Layout::Csr,
                    nnz: 7
                }
                .to_bytes(),
                6,
                "f",
                0
            )
            .is_err()
        );
    }
}
