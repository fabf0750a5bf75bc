//! Canonical, length-limited Huffman codes (spec §5.5), for the symbol streams of the sparse
//! and codebook stages.
//!
//! The file stores only each symbol's code length; codes are assigned canonically (shorter
//! codes first, then by symbol value, as in DEFLATE), so any reader rebuilds the same code.
//! Lengths are limited to [`MAX_CODE_LEN`] with the zlib/miniz heuristic: build an optimal code,
//! fold longer codes into the limit, then repair the Kraft sum by lengthening the shortest codes
//! that can give room. Decoding is table-driven: one lookup on the next `LOOKUP_BITS` bits
//! resolves every code that short, and longer codes fall back to the canonical per-length search.

use super::bits::{BitReader, BitWriter};
use crate::error::{Error, Result};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Longest code the format allows. Alphabets have at most 2^16 symbols, so 24 leaves room.
pub const MAX_CODE_LEN: u8 = 24;
/// Bits resolved by one table lookup.
const LOOKUP_BITS: u8 = 11;

/// Optimal code lengths for `freqs`, limited to `max_len` bits. Symbols of frequency 0 get
/// length 0 (no code). A single used symbol gets length 1 (the code `0`).
pub fn code_lengths(freqs: &[u64], max_len: u8) -> Vec<u8> {
    let mut lengths = vec![0u8; freqs.len()];
    let used: Vec<usize> = (0..freqs.len()).filter(|&s| freqs[s] > 0).collect();
    match used.len() {
        0 => return lengths,
        1 => {
            lengths[used[0]] = 1;
            return lengths;
        }
        _ => {}
    }
    assert!(
        used.len() <= 1 << max_len,
        "alphabet too large for the length limit"
    );
    // Plain Huffman with a heap. Nodes 0..n are leaves; ties break on node index so the
    // result is deterministic across platforms.
    let n = used.len();
    let mut parent = vec![usize::MAX; 2 * n - 1];
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> = used
        .iter()
        .enumerate()
        .map(|(i, &s)| Reverse((freqs[s], i)))
        .collect();
    let mut next = n;
    while heap.len() > 1 {
        let Reverse((fa, a)) = heap.pop().unwrap();
        let Reverse((fb, b)) = heap.pop().unwrap();
        parent[a] = next;
        parent[b] = next;
        heap.push(Reverse((fa.saturating_add(fb), next)));
        next += 1;
    }
    // Depths, walking from the root (the last node) down: parents have larger indices.
    let mut depth = vec![0u32; 2 * n - 1];
    for node in (0..2 * n - 2).rev() {
        depth[node] = depth[parent[node]] + 1;
    }
    // Count codes per length, folding lengths above the limit into it.
    let max = max_len as usize;
    let mut count = vec![0u64; max + 1];
    for leaf in 0..n {
        count[(depth[leaf] as usize).min(max)] += 1;
    }
    // Repair the Kraft sum: while the code is over-subscribed, take one code of the maximum
    // length away and split a shorter code into two longer ones.
    let kraft = |count: &[u64]| -> u64 { (1..=max).map(|l| count[l] << (max - l)).sum() };
    let mut total = kraft(&count);
    while total > 1 << max {
        count[max] -= 1;
        for l in (1..max).rev() {
            if count[l] > 0 {
                count[l] -= 1;
                count[l + 1] += 2;
                break;
            }
        }
        total -= 1;
    }
    // Hand the lengths out: most frequent symbols get the shortest codes.
    let mut by_freq = used.clone();
    by_freq.sort_by_key(|&s| (Reverse(freqs[s]), s));
    let mut it = by_freq.into_iter();
    for (l, &c) in count.iter().enumerate().skip(1) {
        for _ in 0..c {
            lengths[it.next().unwrap()] = l as u8;
        }
    }
    lengths
}

/// Canonical codes for `lengths` (spec §5.5): by increasing length, then symbol value.
pub fn canonical_codes(lengths: &[u8]) -> Vec<u32> {
    let max = lengths.iter().copied().max().unwrap_or(0) as usize;
    let mut count = vec![0u32; max + 2];
    for &l in lengths {
        count[l as usize] += 1;
    }
    count[0] = 0;
    let mut next = vec![0u32; max + 2];
    let mut code = 0u32;
    for l in 1..=max {
        code = (code + count[l - 1]) << 1;
        next[l] = code;
    }
    lengths
        .iter()
        .map(|&l| {
            if l == 0 {
                0
            } else {
                let c = next[l as usize];
                next[l as usize] += 1;
                c
            }
        })
        .collect()
}

/// Huffman-code `symbols` with the code given by `lengths`; every symbol must have a code.
pub fn encode(symbols: &[u16], lengths: &[u8]) -> Vec<u8> {
    if lengths.iter().filter(|&&l| l > 0).count() == 1 {
        // A lone symbol carries no information: the stream stores no bits (spec §5.5).
        return Vec::new();
    }
    let codes = canonical_codes(lengths);
    let bits: u64 = symbols.iter().map(|&s| lengths[s as usize] as u64).sum();
    let mut w = BitWriter::with_capacity(bits.div_ceil(8) as usize);
    for &s in symbols {
        debug_assert!(lengths[s as usize] > 0, "symbol {s} has no code");
        w.put(codes[s as usize], lengths[s as usize]);
    }
    w.finish()
}

/// Total bits the code spends on a stream with these symbol frequencies.
pub fn coded_bits(freqs: &[u64], lengths: &[u8]) -> u64 {
    if lengths.iter().filter(|&&l| l > 0).count() <= 1 {
        return 0;
    }
    freqs.iter().zip(lengths).map(|(&f, &l)| f * l as u64).sum()
}

/// Empirical entropy in bits per symbol of a frequency table.
pub fn entropy(freqs: &[u64]) -> f64 {
    let total: u64 = freqs.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let t = total as f64;
    let h: f64 = freqs
        .iter()
        .filter(|&&f| f > 0)
        .map(|&f| {
            let p = f as f64 / t;
            -p * p.log2()
        })
        .sum();
    // A single symbol gives -0.0; report it as 0.
    h.max(0.0)
}

/// A decoder built from code lengths, validated on construction.
pub struct Decoder {
    /// Indexed by the next LOOKUP_BITS bits: `symbol << 8 | length`, or 0 for "longer code".
    table: Vec<u32>,
    lookup: u8,
    max_len: u8,
    /// Canonical decoding of long codes: per length, the first code, its index into
    /// `sorted`, and the number of codes.
    first_code: Vec<u32>,
    first_index: Vec<u32>,
    count: Vec<u32>,
    sorted: Vec<u16>,
    /// The stream has exactly one symbol, coded `0`.
    single: Option<u16>,
}

impl Decoder {
    /// `fail` builds the error for a bad table (the caller knows the field and offset).
    pub fn new(lengths: &[u8], fail: &dyn Fn(String) -> Error) -> Result<Decoder> {
        let max_len = lengths.iter().copied().max().unwrap_or(0);
        if max_len > MAX_CODE_LEN {
            return Err(fail(format!(
                "code length {max_len} exceeds the limit of {MAX_CODE_LEN}"
            )));
        }
        let used = lengths.iter().filter(|&&l| l > 0).count();
        let mut count = vec![0u32; max_len as usize + 1];
        for &l in lengths {
            count[l as usize] += 1;
        }
        count[0] = 0;
        let single = if used == 1 {
            let s = lengths.iter().position(|&l| l > 0).unwrap();
            if lengths[s] != 1 {
                return Err(fail(format!(
                    "a lone symbol must have code length 1, found {}",
                    lengths[s]
                )));
            }
            Some(s as u16)
        } else {
            None
        };
        if used >= 2 {
            // Kraft sum must be exactly 1: neither over-subscribed nor incomplete.
            let kraft: u64 = (1..=max_len as usize)
                .map(|l| (count[l] as u64) << (max_len as usize - l))
                .sum();
            let full = 1u64 << max_len;
            if kraft != full {
                let what = if kraft > full {
                    "over-subscribed"
                } else {
                    "incomplete"
                };
                return Err(fail(format!("code lengths form an {what} prefix code")));
            }
        }
        let mut first_code = vec![0u32; max_len as usize + 2];
        let mut first_index = vec![0u32; max_len as usize + 2];
        let mut code = 0u32;
        let mut index = 0u32;
        for l in 1..=max_len as usize {
            code = (code + count[l - 1]) << 1;
            first_code[l] = code;
            first_index[l] = index;
            index += count[l];
        }
        let mut sorted: Vec<u16> = (0..lengths.len() as u32)
            .filter(|&s| lengths[s as usize] > 0)
            .map(|s| s as u16)
            .collect();
        sorted.sort_by_key(|&s| (lengths[s as usize], s));
        let lookup = max_len.clamp(1, LOOKUP_BITS);
        let mut table = vec![0u32; 1 << lookup];
        if single.is_none() {
            let codes = canonical_codes(lengths);
            for (s, (&l, &c)) in lengths.iter().zip(&codes).enumerate() {
                if l == 0 || l > lookup {
                    continue;
                }
                let shift = lookup - l;
                let start = (c << shift) as usize;
                for e in &mut table[start..start + (1 << shift)] {
                    *e = (s as u32) << 8 | l as u32;
                }
            }
        }
        Ok(Decoder {
            table,
            lookup,
            max_len,
            first_code,
            first_index,
            count,
            sorted,
            single,
        })
    }

    /// Decode exactly `n` symbols from `bits`, calling `emit` for each. The stream must end
    /// within the last byte, and its padding bits must be zero.
    pub fn decode(
        &self,
        bits: &[u8],
        n: u64,
        fail: &dyn Fn(String) -> Error,
        mut emit: impl FnMut(u16),
    ) -> Result<()> {
        let total_bits = bits.len() as u64 * 8;
        let mut r = BitReader::new(bits);
        if let Some(s) = self.single {
            // Every symbol is the lone symbol; no bits are stored.
            if !bits.is_empty() {
                return Err(fail("a single-symbol stream stores no bits".into()));
            }
            for _ in 0..n {
                emit(s);
            }
            return Ok(());
        }
        if n > 0 && self.sorted.is_empty() {
            return Err(fail(format!(
                "{n} symbols to decode but no symbol has a code"
            )));
        }
        // Bits consumed so far: whole bytes loaded minus bits still in the window. Reading past
        // the end yields zero bits, so overruns are caught by comparing against the real size,
        // every block of symbols (bounding the work a short hostile stream can cause) and at the end.
        let consumed = BitReader::consumed;
        let shift = 64 - self.lookup as u32;
        let mut done = 0u64;
        while done < n {
            let block = (n - done).min(4096);
            for _ in 0..block {
                if r.avail < self.max_len as u32 {
                    r.refill();
                }
                let entry = self.table[(r.acc >> shift) as usize];
                let (symbol, len) = if entry != 0 {
                    ((entry >> 8) as u16, (entry & 0xff) as u8)
                } else {
                    self.decode_long(&r)
                        .ok_or_else(|| fail("invalid code in the bit stream".into()))?
                };
                r.consume(len);
                emit(symbol);
            }
            done += block;
            if consumed(&r) > total_bits {
                return Err(fail(format!(
                    "bit stream ends before symbol {} of {n}",
                    done.min(n)
                )));
            }
        }
        let consumed = consumed(&r);
        if consumed.div_ceil(8) != bits.len() as u64 {
            return Err(fail(format!(
                "bit stream is {} bytes, the symbols use {}",
                bits.len(),
                consumed.div_ceil(8)
            )));
        }
        let pad = (8 - consumed % 8) % 8;
        if pad > 0 && bits[bits.len() - 1] & ((1u8 << pad) - 1) != 0 {
            return Err(fail("padding bits after the last code must be zero".into()));
        }
        Ok(())
    }

    #[cold]
    fn decode_long(&self, r: &BitReader<'_>) -> Option<(u16, u8)> {
        for l in (self.lookup + 1)..=self.max_len {
            let code = (r.acc >> (64 - l)) as u32;
            let offset = code.wrapping_sub(self.first_code[l as usize]);
            if offset < self.count[l as usize] {
                return Some((
                    self.sorted[(self.first_index[l as usize] + offset) as usize],
                    l,
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn fail(msg: String) -> Error {
        Error::format(ErrorCode::DecodeError, "test", 0, msg)
    }

    fn round_trip(symbols: &[u16], alphabet: usize) -> Vec<u8> {
        let mut freqs = vec![0u64; alphabet];
        for &s in symbols {
            freqs[s as usize] += 1;
        }
        let lengths = code_lengths(&freqs, MAX_CODE_LEN);
        let bits = encode(symbols, &lengths);
        let dec = Decoder::new(&lengths, &fail).unwrap();
        let mut out = Vec::new();
        dec.decode(&bits, symbols.len() as u64, &fail, |s| out.push(s))
            .unwrap();
        assert_eq!(out, symbols);
        lengths
    }

    #[test]
    fn canonical_codes_match_deflate_example() {
        // RFC 1951 §3.2.2: lengths (3,3,3,3,3,2,4,4) give codes 010..110, 00, 1110, 1111.
        let codes = canonical_codes(&[3, 3, 3, 3, 3, 2, 4, 4]);
        assert_eq!(
            codes,
            vec![0b010, 0b011, 0b100, 0b101, 0b110, 0b00, 0b1110, 0b1111]
        );
    }

    #[test]
    fn round_trips_and_approaches_entropy() {
        let mut rng = crate::lcg::Lcg(1);
        let symbols: Vec<u16> = (0..50_000)
            .map(|_| {
                // Geometric-ish distribution over 32 symbols.
                ((rng.next_u64() >> 40).trailing_zeros().min(31)) as u16
            })
            .collect();
        let lengths = round_trip(&symbols, 32);
        let mut freqs = vec![0u64; 32];
        for &s in &symbols {
            freqs[s as usize] += 1;
        }
        let avg = coded_bits(&freqs, &lengths) as f64 / symbols.len() as f64;
        let h = entropy(&freqs);
        assert!(avg >= h && avg < h + 1.0, "avg {avg} vs entropy {h}");
    }

    #[test]
    fn single_symbol_and_empty_streams() {
        round_trip(&[7; 100], 8);
        round_trip(&[], 8);
        let lengths = round_trip(&[3], 4);
        assert_eq!(lengths, vec![0, 0, 0, 1]);
    }

    #[test]
    fn lengths_are_limited_and_still_decode() {
        // Fibonacci frequencies force a maximal-depth optimal tree.
        let mut freqs = vec![1u64, 1];
        while freqs.len() < 40 {
            let n = freqs.len();
            freqs.push(freqs[n - 1] + freqs[n - 2]);
        }
        let unlimited = code_lengths(&freqs, 63);
        assert!(unlimited.iter().copied().max().unwrap() > MAX_CODE_LEN);
        let lengths = code_lengths(&freqs, MAX_CODE_LEN);
        assert_eq!(lengths.iter().copied().max().unwrap(), MAX_CODE_LEN);
        let kraft: f64 = lengths.iter().map(|&l| 2f64.powi(-(l as i32))).sum();
        assert!((kraft - 1.0).abs() < 1e-12);
        let symbols: Vec<u16> = (0..40u16).chain([0, 1, 39, 38]).collect();
        let bits = encode(&symbols, &lengths);
        let dec = Decoder::new(&lengths, &fail).unwrap();
        let mut out = Vec::new();
        dec.decode(&bits, symbols.len() as u64, &fail, |s| out.push(s))
            .unwrap();
        assert_eq!(out, symbols);
    }

    #[test]
    fn rejects_bad_tables_and_streams() {
        assert!(Decoder::new(&[1, 1, 1], &fail).is_err(), "over-subscribed");
        assert!(Decoder::new(&[1, 2], &fail).is_err(), "incomplete");
        assert!(
            Decoder::new(&[2], &fail).is_err(),
            "lone symbol of length 2"
        );
        assert!(Decoder::new(&[25, 25], &fail).is_err(), "too long");
        let dec = Decoder::new(&[1, 2, 2], &fail).unwrap();
        // 3 symbols need at least 3 bits; one byte holds them, but asking for 9 symbols of
        // 1-2 bits each from one byte must fail, not read past the end.
        assert!(dec.decode(&[0b0101_1000], 9, &fail, |_| {}).is_err());
        // Extra trailing byte.
        assert!(dec.decode(&[0, 0], 2, &fail, |_| {}).is_err());
        // Nonzero padding: "0" "0" then padding 1.
        assert!(dec.decode(&[0b0000_0001], 2, &fail, |_| {}).is_err());
        let single = Decoder::new(&[0, 1], &fail).unwrap();
        assert!(
            single.decode(&[0], 1, &fail, |_| {}).is_err(),
            "lone symbol stores no bits"
        );
    }
}
