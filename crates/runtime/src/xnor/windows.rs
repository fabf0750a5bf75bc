//! Each output position's window of input signs, gathered into panels the popcount tiles read.

use super::pixels::inside_outputs;
use super::popcount::PANEL;
use super::*;

/// Every output position's input signs in the weights' column order, in panels of [`PANEL`]
/// positions: word `k` of position `pos` is at `((pos / PANEL) · words + k) · PANEL + pos %
/// PANEL`. A tile then reads word `k` of its positions as contiguous vectors, and a panel
/// (`words · 256` bytes) stays in L1 while every weight row passes over it. Taps in the
/// padding, and positions past the last, have zero bits. In a buffer of this thread's pool.
pub(super) fn gather_windows(
    planes: &[u64],
    input: (usize, usize, usize),
    words: usize,
    p: &Conv2dParams,
    output: (usize, usize),
) -> Vec<u64> {
    let (oh, ow) = output;
    let panel_len = words * PANEL;
    let mut windows = scratch::take::<u64>();
    windows.resize((oh * ow).div_ceil(PANEL) * panel_len, 0);
    // Bands of panels over the threads, each writing only its own positions.
    parallel::split_rows(
        &mut windows,
        panel_len,
        PANELS_PER_BAND,
        panel_len,
        &|first_panel, band| {
            let first = first_panel * PANEL;
            let positions = first..(first + band.len() / words).min(oh * ow);
            gather_band(band, positions, planes, input, words, p, output)
        },
    );
    windows
}

/// Panels a part of [`gather_windows`] holds a whole number of.
pub(super) const PANELS_PER_BAND: usize = 4;

/// [`gather_windows`] for the output positions `band` (starting a panel), into `windows`, the
/// band's panels.
pub(super) fn gather_band(
    windows: &mut [u64],
    band: std::ops::Range<usize>,
    planes: &[u64],
    (c, h, w): (usize, usize, usize),
    words: usize,
    p: &Conv2dParams,
    (oh, ow): (usize, usize),
) {
    let [kh, kw] = p.kernel;
    // The band's output rows, and its positions in row `oy`.
    let band_rows = band.start / ow..band.end.div_ceil(ow);
    let in_band = |oy: usize, cols: &std::ops::Range<usize>| {
        cols.start.max(band.start.saturating_sub(oy * ow))
            ..cols.end.min(band.end.saturating_sub(oy * ow))
    };
    for ky in 0..kh {
        let out_rows = inside_outputs(ky, 0, p, h, oh);
        let out_rows = out_rows.start.max(band_rows.start)..out_rows.end.min(band_rows.end);
        for kx in 0..kw {
            let out_cols = inside_outputs(kx, 1, p, w, ow);
            for (j, plane) in planes.chunks_exact(h * w).enumerate() {
                // This plane's 64 channels start at this bit of the window: one or two words.
                let at = (ky * kw + kx) * c + 64 * j;
                let (word, shift) = (at / 64, at % 64);
                let spills = shift != 0 && word + 1 < words;
                for oy in out_rows.clone() {
                    let iy = oy * p.stride[0] + ky * p.dilation[0] - p.padding[0];
                    let input_row = &plane[iy * w..(iy + 1) * w];
                    // Runs of positions within one panel: contiguous words on both sides.
                    let cols = in_band(oy, &out_cols);
                    let mut ox = cols.start;
                    while ox < cols.end {
                        let pos = oy * ow + ox;
                        let run = (PANEL - pos % PANEL).min(cols.end - ox);
                        let local = pos - band.start;
                        let first = (local / PANEL * words + word) * PANEL + local % PANEL;
                        let ix = ox * p.stride[1] + kx * p.dilation[1] - p.padding[1];
                        let inputs = &input_row[ix..];
                        let dst = &mut windows[first..first + run];
                        or_shifted(dst, inputs, p.stride[1], |bits| bits << shift);
                        if spills {
                            let dst = &mut windows[first + PANEL..first + PANEL + run];
                            or_shifted(dst, inputs, p.stride[1], |bits| bits >> (64 - shift));
                        }
                        ox += run;
                    }
                }
            }
        }
    }
}

/// `dst[i] |= shifted(src[i · stride])`; a plain zip for stride 1, which vectorises.
#[inline]
pub(super) fn or_shifted(
    dst: &mut [u64],
    src: &[u64],
    stride: usize,
    shifted: impl Fn(u64) -> u64,
) {
    if stride == 1 {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d |= shifted(s);
        }
    } else {
        for (d, &s) in dst.iter_mut().zip(src.iter().step_by(stride)) {
            *d |= shifted(s);
        }
    }
}
