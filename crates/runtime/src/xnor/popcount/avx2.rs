//! [`count_differences`](super::count_differences) on AVX2, which has no vector popcount. Each byte
//! of `x XOR w` is counted by two 16-entry lookups (`VPSHUFB`, one per nibble); the byte counts of
//! up to [`BYTE_BLOCK`] words are added as bytes, and only then widened into 64-bit lanes by
//! `VPSADBW`, one per block instead of one per word.
//!
//! - Windows and weights come with their nibbles already apart ([`window_groups`],
//!   [`tile_groups`]): the lookups need each nibble alone in its byte, and
//!   `(x XOR w) >> 4` masked is `(x >> 4) XOR (w >> 4)` masked. So a word takes two XORs,
//!   two lookups and two adds, instead of an XOR, a shift, two masks, two lookups and two
//!   adds. Splitting costs one pass over each image's windows, which every weight row then
//!   reads.
//! - Those six vector operations a word-vector keep the four vector pipes busy, while the
//!   integer ones idle. So the last [`SCALAR`] positions of each panel are counted there, by
//!   scalar `POPCNT`, in the same loop.
//! - A row's whole panel is one pass: its byte accumulators, the table and the weight word's
//!   two halves fit in the 16 registers. The widened counts must not take registers too:
//!   where a change around the loop led the compiler to keep them there, it loaded the table
//!   again for every lookup and the layer took 1.4 times as long. Check the loop's
//!   disassembly (`perf annotate`) after changing it: one register for the table, no loads
//!   of it inside.

use super::{PANEL, TILE_ROWS};
use std::arch::x86_64::*;

/// Words whose byte counts (at most 8 each) add up within a byte: 31 · 8 = 248.
const BYTE_BLOCK: usize = 31;
/// The positions of a panel counted by scalar popcounts.
const SCALAR: usize = 4;
/// The positions of a panel counted in vectors.
const VECTOR: usize = PANEL - SCALAR;
/// Vectors of four positions.
const VECTORS: usize = VECTOR / 4;
/// The values of one word of a panel in [`window_groups`].
const WINDOW_GROUP: usize = 2 * VECTOR + SCALAR;
/// The values of one word of a tile in [`tile_groups`].
const TILE_GROUP: usize = 3 * TILE_ROWS;
/// The low nibble of every byte.
const LOW_NIBBLES: u64 = 0x0f0f_0f0f_0f0f_0f0f;

/// Each word of each panel ([`PANEL`] positions) as the low nibbles of its first
/// [`VECTOR`] positions, their high nibbles shifted down, and its last [`SCALAR`]
/// positions whole.
pub(super) fn window_groups(windows: &[u64], laid: &mut Vec<u64>) {
    split_groups(windows, PANEL, VECTOR, VECTOR, laid)
}

/// Each word of each tile ([`TILE_ROWS`] rows) as its rows' low nibbles, their high
/// nibbles shifted down, and the rows whole.
pub(super) fn tile_groups(tiles: &[u64]) -> Vec<u64> {
    let mut laid = Vec::new();
    split_groups(tiles, TILE_ROWS, TILE_ROWS, 0, &mut laid);
    laid
}

/// `words` in groups of `group` into `laid` (emptied first): each as the low nibbles of
/// its first `split` words, their high nibbles shifted down, then its words from `whole`
/// on as they are. Built by extending, so nothing is zeroed first.
fn split_groups(words: &[u64], group: usize, split: usize, whole: usize, laid: &mut Vec<u64>) {
    laid.clear();
    laid.reserve(words.len() / group * (2 * split + group - whole));
    for from in words.chunks_exact(group) {
        laid.extend(from[..split].iter().map(|&x| nibbles(x).0));
        laid.extend(from[..split].iter().map(|&x| nibbles(x).1));
        laid.extend_from_slice(&from[whole..]);
    }
}

/// `count + popcount(x)` by a scalar `POPCNT`, opaque to the compiler: written as
/// `count_ones`, the [`SCALAR`] positions' counts were vectorised (into the same
/// lookups as the rest of the loop, or their sums gathered into a vector), which left
/// the integer pipes idle and loaded the vector ones more.
#[inline(always)]
fn add_popcount(count: u64, x: u64) -> u64 {
    let mut count = count;
    // SAFETY: POPCNT and ADD read and write registers only; the caller has the
    // `popcnt` feature.
    unsafe {
        std::arch::asm!(
            "popcnt {ones}, {x}",
            "add {count}, {ones}",
            count = inout(reg) count,
            x = in(reg) x,
            ones = out(reg) _,
            options(pure, nomem, nostack),
        );
    }
    count
}

/// `x & 0x0f…` and `(x >> 4) & 0x0f…`.
#[inline(always)]
fn nibbles(x: u64) -> (u64, u64) {
    (x & LOW_NIBBLES, (x >> 4) & LOW_NIBBLES)
}

/// As the portable kernel, over [`window_groups`] and [`tile_groups`].
#[target_feature(enable = "avx2,popcnt")]
pub(super) fn differences(out: &mut [u32], tiles: &[u64], windows: &[u64], words: usize) {
    let stride = windows.len() / (words * WINDOW_GROUP) * PANEL;
    for (panel, xs) in windows.chunks_exact(words * WINDOW_GROUP).enumerate() {
        for (tile, ws) in tiles.chunks_exact(words * TILE_GROUP).enumerate() {
            for r in 0..TILE_ROWS {
                let at = (tile * TILE_ROWS + r) * stride + panel * PANEL;
                let (vector, scalar) = row_counts(xs, ws, r, words);
                let to = &mut out[at..at + PANEL];
                for (chunk, &count) in to.chunks_exact_mut(4).zip(&vector) {
                    let mut lanes = [0u64; 4];
                    // SAFETY: `lanes` is 32 bytes; storeu needs no alignment.
                    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), count) };
                    // Counts are at most 64 · words, far below 2³².
                    for (c, &l) in chunk.iter_mut().zip(&lanes) {
                        *c = l as u32;
                    }
                }
                for (c, &count) in to[VECTOR..].iter_mut().zip(&scalar) {
                    *c = count as u32;
                }
            }
        }
    }
}

/// The counts of weight row `r` of a tile (`ws`) against the positions of a panel
/// (`xs`): the first [`VECTOR`] in vectors of four 64-bit lanes, the last [`SCALAR`]
/// apart.
#[target_feature(enable = "avx2,popcnt")]
#[inline]
fn row_counts(
    xs: &[u64],
    ws: &[u64],
    r: usize,
    words: usize,
) -> ([__m256i; VECTORS], [u64; SCALAR]) {
    assert!(xs.len() >= words * WINDOW_GROUP && ws.len() >= words * TILE_GROUP);
    assert!(r < TILE_ROWS);
    let table = _mm256_setr_epi8(
        0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, //
        0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
    );
    let mut counts = [_mm256_setzero_si256(); VECTORS];
    let mut scalar = [0u64; SCALAR];
    let mut k = 0;
    while k < words {
        let end = (k + BYTE_BLOCK).min(words);
        let mut bytes = [_mm256_setzero_si256(); VECTORS];
        for k in k..end {
            // SAFETY: `k < words`, so word `k`'s groups lie inside `ws` and `xs`
            // (asserted above); loadu needs no alignment.
            unsafe {
                let wk = ws.as_ptr().add(k * TILE_GROUP + r);
                let w_low = _mm256_set1_epi64x(*wk as i64);
                let w_high = _mm256_set1_epi64x(*wk.add(TILE_ROWS) as i64);
                let w_whole = *wk.add(2 * TILE_ROWS);
                let low = xs.as_ptr().add(k * WINDOW_GROUP);
                let high = low.add(VECTOR);
                let whole = high.add(VECTOR);
                for (v, b) in bytes.iter_mut().enumerate() {
                    let x_low = _mm256_loadu_si256(low.add(4 * v).cast());
                    let x_high = _mm256_loadu_si256(high.add(4 * v).cast());
                    let ones = _mm256_add_epi8(
                        _mm256_shuffle_epi8(table, _mm256_xor_si256(x_low, w_low)),
                        _mm256_shuffle_epi8(table, _mm256_xor_si256(x_high, w_high)),
                    );
                    *b = _mm256_add_epi8(*b, ones);
                }
                for (j, count) in scalar.iter_mut().enumerate() {
                    *count = add_popcount(*count, *whole.add(j) ^ w_whole);
                }
            }
        }
        for (c, &b) in counts.iter_mut().zip(&bytes) {
            *c = _mm256_add_epi64(*c, _mm256_sad_epu8(b, _mm256_setzero_si256()));
        }
        k = end;
    }
    (counts, scalar)
}
