//! What a convolution's padding takes off its sign products: the positions whose windows reach into
//! it, and each pattern of padded taps' share of each row.

use super::pixels::input_index;
use super::*;

/// What a convolution's padding takes off its sign products, for one geometry: the positions
/// whose windows reach into it, and what each pattern of padded taps adds to each row.
#[derive(Debug, Clone)]
pub(super) struct Borders {
    /// The layer's parameters and `(c, h, w)` these are for.
    pub(super) geometry: (Conv2dParams, (usize, usize, usize)),
    /// The positions whose windows reach into the padding ([`border_runs`]).
    pub(super) runs: Vec<BorderRun>,
    /// `[o · patterns + q]`: what pattern `q`'s taps add to row `o`'s `cols − 2 · popcount`
    /// ([`border_dots`]), to be taken off.
    pub(super) dots: Vec<i32>,
}

impl Borders {
    fn new(
        w: &BitRows,
        p: &Conv2dParams,
        input: (usize, usize, usize),
        output: (usize, usize),
    ) -> Borders {
        let (border, patterns) = border_windows(p, input, output);
        Borders {
            geometry: (*p, input),
            runs: border_runs(&border, patterns.len()),
            dots: border_dots(w, input.0, &patterns),
        }
    }
}

impl BitRows {
    /// [`Borders`] for a geometry (`output` is `p`'s for `input`): kept for the first one
    /// asked, made anew for any other.
    pub(super) fn borders_for(
        &self,
        p: &Conv2dParams,
        input: (usize, usize, usize),
        output: (usize, usize),
    ) -> Cow<'_, Borders> {
        let kept = self
            .borders
            .get_or_init(|| Borders::new(self, p, input, output));
        if kept.geometry == (*p, input) {
            Cow::Borrowed(kept)
        } else {
            Cow::Owned(Borders::new(self, p, input, output))
        }
    }
}

/// The output positions whose windows reach into the padding, each with the index of its
/// pattern (the taps that lie in the padding), and the patterns: a few, one per edge and
/// corner of a 3×3 window with padding 1.
pub(super) fn border_windows(
    p: &Conv2dParams,
    (_, h, w): (usize, usize, usize),
    (oh, ow): (usize, usize),
) -> (Vec<(usize, usize)>, Vec<Vec<usize>>) {
    let [kh, kw] = p.kernel;
    let (mut border, mut patterns) = (Vec::new(), Vec::<Vec<usize>>::new());
    let mut padded = Vec::new();
    for oy in 0..oh {
        for ox in 0..ow {
            padded.clear();
            for ky in 0..kh {
                for kx in 0..kw {
                    if input_index(oy, ky, 0, p, h).is_none()
                        || input_index(ox, kx, 1, p, w).is_none()
                    {
                        padded.push(ky * kw + kx);
                    }
                }
            }
            if padded.is_empty() {
                continue;
            }
            let q = match patterns.iter().position(|q| *q == padded) {
                Some(q) => q,
                None => {
                    patterns.push(padded.clone());
                    patterns.len() - 1
                }
            };
            border.push((oy * ow + ox, q));
        }
    }
    (border, patterns)
}

/// Positions `start + i · step` for `i < len` whose windows have the same taps in the
/// padding (pattern number `pattern` of [`border_windows`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct BorderRun {
    pub(super) start: usize,
    pub(super) step: usize,
    pub(super) len: usize,
    pub(super) pattern: usize,
}

/// The border positions as runs: an edge of the image is one (a row of positions, or a
/// column at a step of the row length), which the rewrite walks without looking up each
/// position and its pattern.
pub(super) fn border_runs(border: &[(usize, usize)], patterns: usize) -> Vec<BorderRun> {
    let mut runs = Vec::new();
    for pattern in 0..patterns {
        let mut run: Option<BorderRun> = None;
        for &(pos, _) in border.iter().filter(|&&(_, q)| q == pattern) {
            let single = BorderRun {
                start: pos,
                step: 1,
                len: 1,
                pattern,
            };
            run = Some(match run {
                None => single,
                Some(r) if r.len == 1 => BorderRun {
                    step: pos - r.start,
                    len: 2,
                    ..r
                },
                Some(r) if pos == r.start + r.len * r.step => BorderRun {
                    len: r.len + 1,
                    ..r
                },
                Some(r) => {
                    runs.push(r);
                    single
                }
            });
        }
        runs.extend(run);
    }
    runs
}

/// `[o · patterns + q]`: what the taps of pattern `q` add to row `o`'s `cols − 2 · popcount(x
/// XOR w)`. A tap in the padding has zero input bits, read as −1, so each of its `c` columns
/// adds `−sign(w)`: `c − 2 · ones` in all. The true product has nothing there.
pub(super) fn border_dots(w: &BitRows, c: usize, patterns: &[Vec<usize>]) -> Vec<i32> {
    let taps = w.cols / c.max(1);
    let ones = tap_ones(w, c);
    let mut dots = Vec::with_capacity(w.rows * patterns.len());
    for row in ones.chunks_exact(taps.max(1)).take(w.rows) {
        for pattern in patterns {
            let padded: u32 = pattern.iter().map(|&tap| row[tap]).sum();
            dots.push((pattern.len() * c) as i32 - 2 * padded as i32);
        }
    }
    dots
}

/// `[o · taps + tap]`: the set bits of each tap's `c` columns in each weight row, with the
/// POPCNT instruction where there is one (the x86-64 baseline lacks it).
#[multiversion::multiversion(targets("x86_64+popcnt", "aarch64+neon"))]
pub(super) fn tap_ones(w: &BitRows, c: usize) -> Vec<u32> {
    let taps = w.cols / c.max(1);
    let mut ones = Vec::with_capacity(w.rows * taps);
    for row in w.bits.chunks_exact(w.words.max(1)).take(w.rows) {
        for tap in 0..taps {
            ones.push(ones_in(row, tap * c, c));
        }
    }
    ones
}

/// Set bits among bits `start..start + len` of `row`, a word (or the part of one in range)
/// at a time.
#[inline]
pub(super) fn ones_in(row: &[u64], start: usize, len: usize) -> u32 {
    if start.is_multiple_of(64) && len.is_multiple_of(64) {
        // Whole words, as when the channels are a multiple of 64.
        let mut ones = 0;
        for word in &row[start / 64..(start + len) / 64] {
            ones += word.count_ones();
        }
        return ones;
    }
    let (mut ones, end) = (0, start + len);
    let mut k = start;
    while k < end {
        let (word, bit) = (k / 64, k % 64);
        let take = (64 - bit).min(end - k);
        let mask = if take == 64 {
            u64::MAX
        } else {
            ((1u64 << take) - 1) << bit
        };
        ones += (row[word] & mask).count_ones();
        k += take;
    }
    ones
}
