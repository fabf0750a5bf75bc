//! [`count_differences`](super::count_differences) on AVX-512: a tile's 4 × 32 counts stay in 16
//! registers of eight 64-bit lanes for all `words` (XOR with the broadcast weight word, VPOPCNTQ,
//! add), and are narrowed and stored once. No horizontal sums: each lane is one position.

use super::{PANEL, TILE_ROWS};
use std::arch::x86_64::*;

const VECTORS: usize = PANEL / 8;

#[target_feature(enable = "avx512f,avx512vpopcntdq")]
pub(super) fn differences(out: &mut [u32], tiles: &[u64], windows: &[u64], words: usize) {
    let stride = windows.len() / words;
    for (panel, xs) in windows.chunks_exact(words * PANEL).enumerate() {
        for (tile, ws) in tiles.chunks_exact(words * TILE_ROWS).enumerate() {
            let counts = tile_counts(xs, ws);
            for (r, row) in counts.iter().enumerate() {
                let at = (tile * TILE_ROWS + r) * stride + panel * PANEL;
                store_counts(&mut out[at..at + PANEL], row);
            }
        }
    }
}

#[target_feature(enable = "avx512f,avx512vpopcntdq")]
#[inline]
fn tile_counts(xs: &[u64], ws: &[u64]) -> [[__m512i; VECTORS]; TILE_ROWS] {
    let mut counts = [[_mm512_setzero_si512(); VECTORS]; TILE_ROWS];
    for (xk, wk) in xs.chunks_exact(PANEL).zip(ws.chunks_exact(TILE_ROWS)) {
        let x = load_positions(xk);
        for (row, &w) in counts.iter_mut().zip(wk) {
            let w = _mm512_set1_epi64(w as i64);
            for (count, &x) in row.iter_mut().zip(&x) {
                let differ = _mm512_popcnt_epi64(_mm512_xor_si512(x, w));
                *count = _mm512_add_epi64(*count, differ);
            }
        }
    }
    counts
}

/// One word of a panel's positions, `PANEL` words, as vectors.
#[target_feature(enable = "avx512f")]
#[inline]
fn load_positions(xk: &[u64]) -> [__m512i; VECTORS] {
    let mut x = [_mm512_setzero_si512(); VECTORS];
    for (v, chunk) in x.iter_mut().zip(xk.chunks_exact(8)) {
        // SAFETY: `chunk` is eight u64, the 64 bytes read; loadu needs no alignment.
        *v = unsafe { _mm512_loadu_si512(chunk.as_ptr().cast()) };
    }
    x
}

/// The counts (at most 64 · words, far below 2³²) narrowed to u32 and stored.
#[target_feature(enable = "avx512f")]
#[inline]
fn store_counts(out: &mut [u32], counts: &[__m512i; VECTORS]) {
    for (chunk, &v) in out.chunks_exact_mut(8).zip(counts) {
        // SAFETY: `chunk` is eight u32, the 32 bytes written; storeu needs no alignment.
        unsafe { _mm256_storeu_si256(chunk.as_mut_ptr().cast(), _mm512_cvtepi64_epi32(v)) };
    }
}
