//! A binary layer's weights (sign bits, or floats where the file stores them so) and how its input
//! becomes signs.

use super::borders::Borders;
use super::popcount::{Popcount, weight_tiles};
use super::*;

/// Sign bits of a weight matrix, one row per output channel, 64 columns per word (column `k`
/// is bit `k % 64` of word `k / 64`); bits past `cols` are zero.
#[derive(Debug, Clone)]
pub struct BitRows {
    pub rows: usize,
    pub cols: usize,
    pub words: usize,
    pub bits: Vec<u64>,
    pub alpha: Vec<f32>,
    /// The rows as the fastest popcount kernel's convolution reads them
    /// ([`Popcount::lay_out_tiles`]), made by the first call and kept for the next passes.
    pub(super) tiles: OnceLock<Vec<u64>>,
    /// A convolution's windows in the padding and what they add ([`Borders`]), for the
    /// geometry of the first call, kept for the next passes (a model's input shape is fixed).
    pub(super) borders: OnceLock<Borders>,
}

/// Equal weights: the kept tiles are made from them.
impl PartialEq for BitRows {
    fn eq(&self, other: &BitRows) -> bool {
        (self.rows, self.cols, self.words) == (other.rows, other.cols, other.words)
            && self.bits == other.bits
            && self.alpha == other.alpha
    }
}

impl BitRows {
    /// Repack a `binary` tensor's bytes (most significant bit first, rows byte-aligned) into
    /// words for the popcount kernel.
    pub fn from_binary(b: &Binary) -> BitRows {
        Self::permuted(b, |k| k)
    }

    /// A convolution's weights `[out, channels, kh, kw]`, columns reordered from the file's
    /// `(c, ky, kx)` to `(ky, kx, c)`: then the input bits a window position contributes (one
    /// bit per channel) are contiguous, and building each output position's bits copies whole
    /// words instead of testing every channel of every tap.
    pub fn for_conv(b: &Binary, channels: usize) -> BitRows {
        let window = b.cols / channels.max(1);
        Self::permuted(b, |k| (k % window) * channels + k / window)
    }

    fn permuted(b: &Binary, column: impl Fn(usize) -> usize) -> BitRows {
        let words = b.cols.div_ceil(64);
        let mut bits = vec![0u64; b.rows * words];
        for r in 0..b.rows {
            for (k, sign) in b.row_signs(r).enumerate() {
                if sign {
                    let k = column(k);
                    bits[r * words + k / 64] |= 1 << (k % 64);
                }
            }
        }
        BitRows {
            rows: b.rows,
            cols: b.cols,
            words,
            bits,
            alpha: b.scales.clone(),
            tiles: OnceLock::new(),
            borders: OnceLock::new(),
        }
    }

    /// The rows in the tiles `kernel` reads: kept for the fastest kernel, which is the one
    /// every pass takes, and made anew for the others (which only tests take).
    pub(super) fn tiles_for(&self, kernel: Popcount) -> Cow<'_, [u64]> {
        if kernel == Popcount::fastest() {
            Cow::Borrowed(
                self.tiles
                    .get_or_init(|| kernel.lay_out_tiles(weight_tiles(self))),
            )
        } else {
            Cow::Owned(kernel.lay_out_tiles(weight_tiles(self)))
        }
    }
}

/// The weights of an XNOR layer.
#[derive(Debug, Clone)]
pub enum XnorWeight<'a> {
    /// Stored `binary`: the popcount kernel.
    Bits(BitRows),
    /// Any other encoding: signs times float weights.
    Float(Matrix<'a>),
}

impl XnorWeight<'_> {
    pub fn rows(&self) -> usize {
        match self {
            XnorWeight::Bits(b) => b.rows,
            XnorWeight::Float(m) => m.rows(),
        }
    }
}

/// How a binary layer's input becomes signs, and whether its outputs are scaled.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum SignInput {
    /// XNOR-Net's layers (`xnor_conv2d`, `xnor_dense`): signs at 0, each output scaled by `K`,
    /// the mean `|x|` of its receptive field.
    #[default]
    Scaled,
    /// A `sign` node fused into the `conv2d` / `dense` it feeds (spec 1.5): signs at a
    /// threshold per input channel (0 without), outputs unscaled.
    Thresholds(Option<Vec<f32>>),
}

impl SignInput {
    /// The threshold of input channel `c`.
    #[inline]
    pub(super) fn at(&self, c: usize) -> f32 {
        match self {
            SignInput::Thresholds(Some(t)) => t[c],
            _ => 0.0,
        }
    }

    pub(super) fn scaled(&self) -> bool {
        matches!(self, SignInput::Scaled)
    }
}

/// The sign of `x` at threshold `t`: +1 for `x ≥ t`, else −1 (NaN included).
#[inline]
pub(super) fn sign(x: f32, t: f32) -> f32 {
    if x >= t { 1.0 } else { -1.0 }
}
