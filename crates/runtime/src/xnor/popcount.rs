//! The kernels that count differing sign bits: AVX-512 `VPOPCNTQ`, AVX2 nibble lookups, and
//! portable popcounts, all giving the same integers.

use super::*;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

/// Output positions per panel of gathered input signs ([`gather_windows`]), which is the
/// width of a popcount tile: four vectors of eight 64-bit lanes.
///
/// [`gather_windows`]: super::windows::gather_windows
pub(super) const PANEL: usize = 32;

/// Weight rows per popcount tile ([`weight_tiles`]). Four rows by four vectors of positions
/// is 16 accumulators, which with the four input vectors and a broadcast weight word fits in
/// AVX-512's 32 registers.
pub(super) const TILE_ROWS: usize = 4;

/// Weight rows counted before their counts are finished: 16 rows of 1,024 positions are
/// 64 KiB of counts, which stay in L2 (all 256 rows' 1 MiB went out to memory and back).
pub(super) const ROW_BLOCK: usize = 4 * TILE_ROWS;

/// How the differing sign bits are counted. Counts are integers, so every kernel gives the
/// same bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Popcount {
    /// Scalar popcounts, compiled for POPCNT and NEON where the CPU has them.
    Portable,
    /// AVX-512's vector popcount, a tile of rows × positions held in registers.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// AVX2's nibble lookups, counts summed in bytes over blocks of words.
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Popcount {
    pub(super) fn fastest() -> Popcount {
        #[cfg(target_arch = "x86_64")]
        for kernel in [Popcount::Avx512, Popcount::Avx2] {
            if kernel.available() {
                return kernel;
            }
        }
        Popcount::Portable
    }

    /// Whether this CPU has the features the kernel is compiled for.
    pub(super) fn available(self) -> bool {
        match self {
            Popcount::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Popcount::Avx512 => crate::cpu::avx512_vpopcntdq(),
            #[cfg(target_arch = "x86_64")]
            Popcount::Avx2 => crate::cpu::avx2(),
        }
    }

    /// Weight rows counted before their counts are finished: a block reads every window.
    /// AVX2's windows are twice as large, their nibbles apart (590 KiB for 256 channels at
    /// 32×32, more than Zen 3's L2), so it takes 64 rows at a time (256 KiB of counts) and
    /// reads them four times instead of sixteen: 256→256 at 32×32 took 1.44–1.58 ms against
    /// 1.43–1.82 in three alternating criterion runs.
    pub(super) fn row_block(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Popcount::Avx2 => 4 * ROW_BLOCK,
            _ => ROW_BLOCK,
        }
    }

    /// Gathered windows ([`gather_windows`]) as the kernel reads them: as they are, or for
    /// AVX2 with each word's nibbles apart ([`avx2::window_groups`]) in a buffer of this
    /// thread's pool, `windows` going back to it.
    ///
    /// [`gather_windows`]: super::windows::gather_windows
    pub(super) fn lay_out_windows(self, windows: Vec<u64>) -> Vec<u64> {
        match self {
            #[cfg(target_arch = "x86_64")]
            Popcount::Avx2 => {
                let mut laid = scratch::take();
                avx2::window_groups(&windows, &mut laid);
                scratch::give(windows);
                laid
            }
            _ => windows,
        }
    }

    /// Weight tiles ([`weight_tiles`]) as the kernel reads them (as for
    /// [`Popcount::lay_out_windows`]).
    pub(super) fn lay_out_tiles(self, tiles: Vec<u64>) -> Vec<u64> {
        match self {
            #[cfg(target_arch = "x86_64")]
            Popcount::Avx2 => avx2::tile_groups(&tiles),
            _ => tiles,
        }
    }
}

/// The weight rows in tiles of [`TILE_ROWS`]: word `k` of row `r` of tile `t` at
/// `(t · words + k) · TILE_ROWS + r`, so that a tile reads its rows' words for one `k`
/// together. Rows past the last are zero.
pub(super) fn weight_tiles(w: &BitRows) -> Vec<u64> {
    let tiles = w.rows.div_ceil(TILE_ROWS);
    let mut packed = vec![0u64; tiles * w.words * TILE_ROWS];
    for (o, row) in w.bits.chunks_exact(w.words.max(1)).take(w.rows).enumerate() {
        let (tile, r) = (o / TILE_ROWS, o % TILE_ROWS);
        for (k, &bits) in row.iter().enumerate() {
            packed[(tile * w.words + k) * TILE_ROWS + r] = bits;
        }
    }
    packed
}

/// [`count_differences`] with scalar popcounts: per tile, the counts of `TILE_ROWS × PANEL`
/// pairs accumulate in an array the compiler can keep in vectors. Plain loops, no closures:
/// multiversion compiles closures without the target's features.
#[multiversion::multiversion(targets("x86_64+avx2+popcnt", "x86_64+popcnt", "aarch64+neon"))]
pub(super) fn differences_portable(out: &mut [u32], tiles: &[u64], windows: &[u64], words: usize) {
    let stride = windows.len() / words;
    for (panel, xs) in windows.chunks_exact(words * PANEL).enumerate() {
        for (tile, ws) in tiles.chunks_exact(words * TILE_ROWS).enumerate() {
            let mut counts = [[0u32; PANEL]; TILE_ROWS];
            for (xk, wk) in xs.chunks_exact(PANEL).zip(ws.chunks_exact(TILE_ROWS)) {
                for (row, &w) in counts.iter_mut().zip(wk) {
                    for (count, &x) in row.iter_mut().zip(xk) {
                        *count += (x ^ w).count_ones();
                    }
                }
            }
            for (r, row) in counts.iter().enumerate() {
                let at = (tile * TILE_ROWS + r) * stride + panel * PANEL;
                out[at..at + PANEL].copy_from_slice(row);
            }
        }
    }
}

/// What one word of a row and a position (64 sign products) counts as in the multiply-adds
/// that decide whether a split is worth a hand-off ([`parallel::split_rows`]): an XOR, a
/// count and an add on an eighth of a vector, against one multiply-add on a sixteenth.
pub(super) const WORK_PER_WORD: usize = 6;

/// `out[o, pos] = Σ_k popcount(windows[pos, k] XOR tiles[o, k])`, one row of `out` per tile
/// row (including the zero rows that complete the last tile), one column per panel position.
/// `tiles` and `windows` as the kernel lays them out ([`Popcount::lay_out_tiles`],
/// [`Popcount::lay_out_windows`]).
pub(super) fn count_differences(
    kernel: Popcount,
    out: &mut [u32],
    tiles: &[u64],
    windows: &[u64],
    words: usize,
) {
    assert!(
        kernel.available(),
        "{kernel:?} on a CPU without its features"
    );
    match kernel {
        Popcount::Portable => differences_portable(out, tiles, windows, words),
        // SAFETY (both): the CPU features the functions are compiled for were just detected.
        #[cfg(target_arch = "x86_64")]
        Popcount::Avx512 => unsafe { avx512::differences(out, tiles, windows, words) },
        #[cfg(target_arch = "x86_64")]
        Popcount::Avx2 => unsafe { avx2::differences(out, tiles, windows, words) },
    }
}
