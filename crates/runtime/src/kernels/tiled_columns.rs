//! Where the columns of a packed product ([`super::tiled`]) lie: one matrix's ([`OneMatrix`]),
//! or several images' side by side ([`Images`]), so that a batch's pointwise convolution is one
//! product whose weights each tile reads once for all the images.
//!
//! The columns fall in stretches: runs that lie one after another in each row of the
//! right-hand side and of the output. One matrix is a single stretch; each image is one.

use super::tiled::{RhsRows, Tiles};

/// A product's columns: how they are packed, where each stretch of them is written.
pub(crate) trait Columns {
    /// Copies columns `col..col + width` of the steps `first_step..first_step + steps` into
    /// panels, as [`Tiles::pack`] lays them out (zeros past `width`).
    ///
    /// # Safety
    /// The CPU has `K`'s instruction set.
    unsafe fn pack<K: Tiles>(
        &self,
        steps: (usize, usize),
        columns: (usize, usize),
        panels: &mut [f32],
    );

    /// The end (exclusive) of the stretch that holds column `col`.
    fn stretch_end(&self, col: usize) -> usize;

    /// How many stretches a tile can start in and end past: one buffer of sums each.
    fn stretches_crossed(&self) -> usize;

    /// The stretch that holds column `col`.
    fn stretch_of(&self, col: usize) -> usize;

    /// Where output row `row` holds column `col`, and how far apart the stretch's rows lie.
    fn out_at(&self, row: usize, col: usize) -> (*mut f32, usize);

    /// Step `k`'s values from column `col` to the end of its stretch.
    fn step_from(&self, k: usize, col: usize) -> &[f32];
}

/// One matrix: step `k` of the right-hand side at `rows_of.offset(k)`, the output's rows
/// `out_stride` apart from `out`.
pub(crate) struct OneMatrix<'a> {
    pub rhs: &'a [f32],
    pub rows_of: RhsRows<'a>,
    pub out: *mut f32,
    pub out_stride: usize,
}

impl Columns for OneMatrix<'_> {
    #[inline(always)]
    unsafe fn pack<K: Tiles>(
        &self,
        (first_step, steps): (usize, usize),
        columns: (usize, usize),
        panels: &mut [f32],
    ) {
        // SAFETY: the CPU has the instruction set (this function's contract).
        unsafe { K::pack(self.rhs, (self.rows_of, first_step), columns, steps, panels) }
    }

    #[inline(always)]
    fn stretch_end(&self, _col: usize) -> usize {
        usize::MAX
    }

    fn stretches_crossed(&self) -> usize {
        0
    }

    #[inline(always)]
    fn stretch_of(&self, _col: usize) -> usize {
        0
    }

    #[inline(always)]
    fn out_at(&self, row: usize, col: usize) -> (*mut f32, usize) {
        let at = self.out.wrapping_add(row * self.out_stride + col);
        (at, self.out_stride)
    }

    fn step_from(&self, k: usize, col: usize) -> &[f32] {
        &self.rhs[self.rows_of.offset(k) + col..]
    }
}

/// Images side by side, each `width` columns: image `g`'s right-hand side is `rhs[g]`
/// (row-major, `width` wide), and its output rows lie `width` apart from `out[g]`.
pub(crate) struct Images<'a> {
    pub rhs: &'a [&'a [f32]],
    pub out: &'a [*mut f32],
    pub width: usize,
}

impl Columns for Images<'_> {
    /// Each image's part through [`Tiles::pack`], from the first panel it starts in. An
    /// image that starts inside a panel fills that panel's remaining lanes first, value by
    /// value; the previous image's pack left them zero, and this image's own pack then starts
    /// on a whole panel. So every lane is written, in image order.
    unsafe fn pack<K: Tiles>(
        &self,
        (first_step, steps): (usize, usize),
        (col, width): (usize, usize),
        panels: &mut [f32],
    ) {
        let mut j = col;
        while j < col + width {
            let (image, from) = (j / self.width, j % self.width);
            let len = (self.width - from).min(col + width - j);
            let rhs = self.rhs[image];
            let at = j - col;
            let lane = at % K::PANEL;
            let head = if lane == 0 {
                0
            } else {
                (K::PANEL - lane).min(len)
            };
            let panel = &mut panels[at / K::PANEL * steps * K::PANEL..];
            for step in (0..steps).filter(|_| head > 0) {
                let row = (first_step + step) * self.width + from;
                panel[step * K::PANEL + lane..][..head].copy_from_slice(&rhs[row..row + head]);
            }
            if len > head {
                let rows_of = (RhsRows::Strided(self.width), first_step);
                let rest = &mut panels[(at + head) / K::PANEL * steps * K::PANEL..];
                // SAFETY: the CPU has the instruction set (this function's contract).
                unsafe { K::pack(rhs, rows_of, (from + head, len - head), steps, rest) };
            }
            j += len;
        }
    }

    #[inline(always)]
    fn stretch_end(&self, col: usize) -> usize {
        (col / self.width + 1) * self.width
    }

    /// Every image but the last: a tile that starts in an image and ends past it holds that
    /// image's last columns, so no two such tiles start in one image.
    fn stretches_crossed(&self) -> usize {
        self.rhs.len().saturating_sub(1)
    }

    #[inline(always)]
    fn stretch_of(&self, col: usize) -> usize {
        col / self.width
    }

    #[inline(always)]
    fn out_at(&self, row: usize, col: usize) -> (*mut f32, usize) {
        let (image, from) = (col / self.width, col % self.width);
        let at = self.out[image].wrapping_add(row * self.width + from);
        (at, self.width)
    }

    fn step_from(&self, k: usize, col: usize) -> &[f32] {
        let (image, from) = (col / self.width, col % self.width);
        &self.rhs[image][k * self.width + from..(k + 1) * self.width]
    }
}
