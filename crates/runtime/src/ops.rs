//! Operator kernels on NCHW `f32` tensors. Convolutions are products ([`kernels::product`]):
//! a 1×1 convolution with stride 1 multiplies the input as it lies, a stride-1 convolution on
//! AVX-512 packs shifted rows of zero-padded bands ([`kernels::shifted_product`]), others go
//! through im2col tiles; depthwise convolutions get a direct kernel (`crate::depthwise`).
//! Weight matrices can be sparse (CSR), in which case the product walks only the surviving
//! weights, or a product of factors (low-rank and Tucker layers), which is applied one thin
//! factor at a time.

use super::signs::{self, SignRows};
use super::{kernels, parallel, scratch};
pub use crate::depthwise::{Path as DepthwiseKernel, depthwise_general, depthwise_through};
pub use crate::kernels::Activation;
use crate::kernels::Epilogue;
use crate::winograd::{self, WinogradWeights};
use ndarray::{Array2, Array4, ArrayView2, ArrayView4, Axis, s};

/// A weight matrix `[rows, cols]`: dense (borrowed from the mapped file when it was stored
/// dense f32, else decoded once), CSR when most of it is zero, a product of factors, or sign
/// bits.
#[derive(Debug, Clone)]
pub enum Matrix<'a> {
    Dense {
        data: std::borrow::Cow<'a, [f32]>,
        rows: usize,
        cols: usize,
    },
    Sparse(Csr),
    /// `W = F₀ · F₁ · …`: each factor multiplies in turn, so `W` itself is never formed.
    Product(Vec<Matrix<'a>>),
    /// Binary weights, `±α` per row, multiplied by adding and subtracting (BWN).
    Signs(SignRows),
    /// Dense weights packed with their columns as vectors, for a convolution whose output
    /// planes are too small to fill the vector lanes ([`kernels::ChannelPanels`]; only made
    /// where [`kernels::own_kernel_available`]).
    Panels(kernels::ChannelPanels),
    /// Dense 3×3 weights and their transform for Winograd's F(4×4, 3×3) ([`crate::winograd`];
    /// only made where it is available): a stride-1 convolution multiplies in the transformed
    /// domain, everything else reads the dense weights.
    Winograd {
        dense: Box<Matrix<'a>>,
        domain: Box<WinogradWeights>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Csr {
    pub rows: usize,
    pub cols: usize,
    pub row_ptr: Vec<usize>,
    pub col: Vec<u32>,
    pub val: Vec<f32>,
}

impl Csr {
    /// Rows `first..first + count`, for the kernels.
    fn block(&self, first: usize, count: usize) -> kernels::SparseRows<'_> {
        kernels::SparseRows {
            row_ptr: &self.row_ptr[first..first + count + 1],
            col: &self.col,
            val: &self.val,
        }
    }

    pub fn from_dense(data: &[f32], rows: usize, cols: usize) -> Csr {
        let data = &data[..rows * cols];
        Csr::from_dense_counted(data, rows, cols, nonzeros(data))
    }

    /// [`Csr::from_dense`] for a caller that has counted `data`'s nonzeros already
    /// ([`nonzeros`]), as the loader has to decide whether to keep the rows at all.
    pub(crate) fn from_dense_counted(
        data: &[f32],
        rows: usize,
        cols: usize,
        nonzeros: usize,
    ) -> Csr {
        let data = &data[..rows * cols];
        let mut row_ptr = Vec::with_capacity(rows + 1);
        // Counted first, so that the rows take their room exactly, not doubled as they grow;
        // one slot more, which every value is written to before the count says whether it
        // stays. Without a branch per value: at 30% kept the branch was mispredicted so often
        // that building the rows was a fifth of loading a pruned Xception (perf).
        let (mut col, mut val) = (vec![0u32; nonzeros + 1], vec![0f32; nonzeros + 1]);
        let mut kept = 0;
        row_ptr.push(0);
        for row in data.chunks_exact(cols.max(1)).take(rows) {
            for (c, &v) in row.iter().enumerate() {
                col[kept] = c as u32;
                val[kept] = v;
                kept += usize::from(v != 0.0);
            }
            row_ptr.push(kept);
        }
        // Rows of no columns: every row is empty.
        row_ptr.resize(rows + 1, 0);
        col.truncate(kept);
        val.truncate(kept);
        Csr {
            rows,
            cols,
            row_ptr,
            col,
            val,
        }
    }

    /// The matrix row-major, zeros where no value is stored; `None` where the allocator
    /// refuses its room.
    pub fn to_dense(&self) -> Option<Vec<f32>> {
        let mut data = Vec::new();
        data.try_reserve_exact(self.rows.checked_mul(self.cols)?)
            .ok()?;
        data.resize(self.rows * self.cols, 0.0);
        for (r, row) in data.chunks_exact_mut(self.cols.max(1)).enumerate() {
            let (a, b) = (self.row_ptr[r], self.row_ptr[r + 1]);
            for (&c, &v) in self.col[a..b].iter().zip(&self.val[a..b]) {
                row[c as usize] = v;
            }
        }
        Some(data)
    }
}

/// The values of `data` that are not zero.
pub(crate) fn nonzeros(data: &[f32]) -> usize {
    data.iter().filter(|&&v| v != 0.0).count()
}

impl<'a> Matrix<'a> {
    /// An owned dense matrix.
    pub fn dense(data: Vec<f32>, rows: usize, cols: usize) -> Matrix<'a> {
        Matrix::Dense {
            data: std::borrow::Cow::Owned(data),
            rows,
            cols,
        }
    }

    pub fn rows(&self) -> usize {
        match self {
            Matrix::Dense { rows, .. } => *rows,
            Matrix::Sparse(c) => c.rows,
            Matrix::Product(f) => f[0].rows(),
            Matrix::Signs(s) => s.rows,
            Matrix::Panels(p) => p.rows(),
            Matrix::Winograd { dense, .. } => dense.rows(),
        }
    }
    pub fn cols(&self) -> usize {
        match self {
            Matrix::Dense { cols, .. } => *cols,
            Matrix::Sparse(c) => c.cols,
            Matrix::Product(f) => f[f.len() - 1].cols(),
            Matrix::Signs(s) => s.cols,
            Matrix::Panels(p) => p.cols(),
            Matrix::Winograd { dense, .. } => dense.cols(),
        }
    }

    /// Multiply-adds of `self · v` for one vector `v`.
    pub fn work(&self) -> usize {
        match self {
            Matrix::Dense { rows, cols, .. } => rows * cols,
            Matrix::Panels(p) => p.rows() * p.cols(),
            Matrix::Sparse(csr) => csr.val.len(),
            Matrix::Product(factors) => factors.iter().map(Matrix::work).sum(),
            Matrix::Signs(s) => s.rows * s.cols,
            Matrix::Winograd { dense, .. } => dense.work(),
        }
    }

    pub fn is_sparse(&self) -> bool {
        matches!(self, Matrix::Sparse(_))
    }

    /// Multiply row `r` by `scale[r]` (a batch norm folded into the layer).
    pub fn scale_rows(&mut self, scale: &[f32]) {
        match self {
            Matrix::Dense { data, cols, .. } => {
                let cols = *cols;
                for (row, s) in data.to_mut().chunks_mut(cols.max(1)).zip(scale) {
                    row.iter_mut().for_each(|v| *v *= s);
                }
            }
            Matrix::Sparse(csr) => {
                for (r, s) in scale.iter().enumerate().take(csr.rows) {
                    let (a, b) = (csr.row_ptr[r], csr.row_ptr[r + 1]);
                    csr.val[a..b].iter_mut().for_each(|v| *v *= s);
                }
            }
            Matrix::Product(f) => f[0].scale_rows(scale),
            Matrix::Signs(s) => s.scale_rows(scale),
            Matrix::Panels(p) => p.scale_rows(scale),
            Matrix::Winograd { dense, domain } => {
                dense.scale_rows(scale);
                domain.scale_rows(scale);
            }
        }
    }

    /// The same matrix stored dense, for kernels that take only dense weights.
    pub fn into_dense(self) -> Matrix<'a> {
        let (rows, cols) = (self.rows(), self.cols());
        match self {
            Matrix::Dense { .. } => self,
            Matrix::Sparse(csr) => {
                let mut dense = vec![0.0; rows * cols];
                for r in 0..rows {
                    for k in csr.row_ptr[r]..csr.row_ptr[r + 1] {
                        dense[r * cols + csr.col[k] as usize] = csr.val[k];
                    }
                }
                Matrix::dense(dense, rows, cols)
            }
            Matrix::Signs(s) => Matrix::dense(s.to_dense(), rows, cols),
            Matrix::Panels(p) => Matrix::dense(p.to_rows(), rows, cols),
            Matrix::Winograd { dense, .. } => dense.into_dense(),
            Matrix::Product(_) => {
                // Wᵀ = (I · Wᵀ): multiply the identity through the factors.
                let eye = Array2::<f32>::eye(cols);
                let wt = self.mul_transposed(eye.view());
                let w = wt.reversed_axes().as_standard_layout().into_owned();
                Matrix::dense(w.into_raw_vec_and_offset().0, rows, cols)
            }
        }
    }

    /// `self[row_start..row_end, :] · rhs` where `rhs` is `[cols, n]`; result `[row_end - row_start, n]`.
    pub fn mul_rows(
        &self,
        row_start: usize,
        row_end: usize,
        rhs: ArrayView2<'_, f32>,
    ) -> Array2<f32> {
        let mut out = Array2::<f32>::zeros((row_end - row_start, rhs.ncols()));
        let slice = out.as_slice_mut().expect("standard layout");
        self.mul_rows_into(slice, row_start, row_end, rhs, &|_, _| {});
        out
    }

    /// [`Matrix::mul_rows_into`] with each output row's bias and activation (`epilogue`,
    /// its bias indexed by the matrix's row): dense weights on AVX-512 apply it in the
    /// product's registers, the rest as a pass over each thread's rows. Then, with a
    /// `residual` (laid out as `out` is), its values are added to each thread's part of the
    /// output while the part is still in that thread's cache ([`add_residual`]).
    pub fn mul_rows_finished_into(
        &self,
        out: &mut [f32],
        (row_start, row_end): (usize, usize),
        rhs: ArrayView2<'_, f32>,
        epilogue: Epilogue<'_>,
        residual: Option<&[f32]>,
    ) {
        let n = rhs.ncols();
        // Each part's residual: the same span of `residual` as the part's of `out`.
        let residual_rows = |first: usize, len: usize| residual.map(|r| &r[first * n..][..len]);
        if let Matrix::Dense { data, cols, .. } = self {
            let rhs = rhs.as_standard_layout();
            let rhs_slice = rhs.as_slice().expect("standard layout");
            let w = &data[row_start * cols..row_end * cols];
            if kernels::own_kernel_available() {
                let shape = (row_end - row_start, n);
                let view = ndarray::ArrayViewMut2::from_shape(shape, out).expect("rows × n");
                let residual =
                    residual.map(|r| ArrayView2::from_shape(shape, r).expect("rows × n"));
                let epilogue = epilogue.from_row(row_start);
                return split_product(view, w, *cols, rhs_slice, epilogue, residual);
            }
            return parallel::split_rows(out, n, 16, cols * n, &|first, part| {
                let rows = part.len() / n.max(1);
                let epilogue = epilogue.from_row(row_start + first);
                kernels::product_finished(
                    part,
                    n,
                    rows,
                    &w[first * cols..],
                    *cols,
                    rhs_slice,
                    n,
                    epilogue,
                );
                add_residual(part, residual_rows(first, part.len()));
            });
        }
        if let Matrix::Winograd { dense, .. } = self {
            let rows = (row_start, row_end);
            return dense.mul_rows_finished_into(out, rows, rhs, epilogue, residual);
        }
        if let Matrix::Panels(panels) = self {
            let rhs = rhs.as_standard_layout();
            let rhs_slice = rhs.as_slice().expect("standard layout");
            let add = |first: usize, part: &mut [f32]| {
                add_residual(part, residual_rows(first - row_start, part.len()))
            };
            return panels_product(out, panels, row_start, (rhs_slice, n), epilogue, &add);
        }
        let finish = |first: usize, rows: &mut [f32]| {
            let n = n.max(1);
            kernels::finish_rows(rows, n, rows.len() / n, n, epilogue.from_row(first));
            add_residual(rows, residual_rows(first - row_start, rows.len()));
        };
        self.mul_rows_into(out, row_start, row_end, rhs, &finish)
    }

    /// [`Matrix::mul_rows`] written into `out` (row-major, `rhs.ncols()` wide, every element
    /// overwritten), the output's rows split over the threads. `finish(row, rows)` runs on each
    /// thread's rows (`row` is the first one's index in `self`) as soon as they are computed,
    /// while they are still in its cache: a bias and an activation cost no pass of their own.
    pub fn mul_rows_into(
        &self,
        out: &mut [f32],
        row_start: usize,
        row_end: usize,
        rhs: ArrayView2<'_, f32>,
        finish: &RowsFinish<'_>,
    ) {
        let n = rhs.ncols();
        let rhs = rhs.as_standard_layout();
        let rhs_slice = rhs.as_slice().expect("standard layout");
        match self {
            Matrix::Dense { data, cols, .. } => {
                let w = &data[row_start * cols..row_end * cols];
                parallel::split_rows(out, n, 16, cols * n, &|first, part| {
                    kernels::product(part, &w[first * cols..], *cols, rhs_slice, n);
                    finish(row_start + first, part);
                })
            }
            Matrix::Product(factors) => {
                // Right to left, so every intermediate is as thin as a factor's rank; the
                // intermediates take turns in two scratch buffers.
                let (first, rest) = factors.split_first().expect("a product has factors");
                let (mut input, mut next) = (scratch::take::<f32>(), scratch::take::<f32>());
                for (i, m) in rest.iter().rev().enumerate() {
                    next.resize(m.rows() * n, 0.0);
                    let from = if i == 0 {
                        rhs.view()
                    } else {
                        ArrayView2::from_shape((m.cols(), n), &input[..]).expect("a factor's rows")
                    };
                    m.mul_rows_into(&mut next, 0, m.rows(), from, &|_, _| {});
                    std::mem::swap(&mut input, &mut next);
                }
                let last =
                    ArrayView2::from_shape((first.cols(), n), &input[..]).expect("a factor's rows");
                first.mul_rows_into(out, row_start, row_end, last, finish);
                scratch::give(input);
                scratch::give(next);
            }
            Matrix::Sparse(csr) => {
                let work_per_row = csr.val.len() / csr.rows.max(1) * n;
                parallel::split_rows(out, n, 1, work_per_row, &|first, part| {
                    let w = csr.block(row_start + first, part.len() / n.max(1));
                    kernels::sparse_rows_times(part, w, rhs_slice, n);
                    finish(row_start + first, part);
                });
            }
            Matrix::Panels(panels) => {
                let none = Epilogue::default();
                panels_product(out, panels, row_start, (rhs_slice, n), none, finish);
            }
            Matrix::Winograd { dense, .. } => {
                dense.mul_rows_into(out, row_start, row_end, rhs.view(), finish)
            }
            Matrix::Signs(s) => {
                let totals = signs::column_totals(rhs_slice, n);
                parallel::split_rows(out, n, 1, s.cols * n / 2, &|first, part| {
                    signs::rows_times(part, s, row_start + first, rhs_slice, n, &totals);
                    finish(row_start + first, part);
                });
            }
        }
    }

    /// `x · selfᵀ` for `x` of shape `[n, cols]`: a fully connected layer.
    pub fn mul_transposed(&self, x: ArrayView2<'_, f32>) -> Array2<f32> {
        let mut out = Array2::<f32>::zeros((x.nrows(), self.rows()));
        self.mul_transposed_into(x, out.as_slice_mut().expect("a fresh array is contiguous"));
        out
    }

    /// [`Matrix::mul_transposed`] written into `out` (`[n, rows]` row-major, every element
    /// overwritten). One or two rows (a batch-1 pass) allocate nothing: the products write
    /// into `out` and a product of factors keeps its intermediates in scratch buffers.
    pub fn mul_transposed_into(&self, x: ArrayView2<'_, f32>, out: &mut [f32]) {
        let rows = self.rows();
        match self {
            Matrix::Dense { data, cols, .. } if x.nrows() <= 2 => {
                // Matrix-vector products: one dot product per weight row, which a general
                // GEMM with one row handles poorly.
                for (xi, y) in x.rows().into_iter().zip(out.chunks_exact_mut(rows.max(1))) {
                    let xs = xi.as_standard_layout();
                    let xs = xs.as_slice().expect("standard layout");
                    parallel::split_rows(y, 1, 4, *cols, &|first, part| {
                        kernels::matvec(part, &data[first * cols..], xs)
                    });
                }
            }
            Matrix::Dense { data, cols, .. } => {
                // Batches: (W · xᵀ)ᵀ, the weight's rows split over the threads like a
                // convolution's. The transposes copy a batch's inputs and outputs, a small
                // fraction of the products.
                let xt = x.t().as_standard_layout().into_owned();
                let mut yt = Array2::<f32>::zeros((rows, x.nrows()));
                product_rows(
                    yt.as_slice_mut().expect("standard layout"),
                    data,
                    *cols,
                    xt.as_slice().expect("standard layout"),
                    x.nrows(),
                );
                copy_transposed(yt.view(), out);
            }
            Matrix::Product(factors) => {
                // x · (F₀ F₁ … Fₖ)ᵀ = x · Fₖᵀ · … · F₀ᵀ, the intermediates taking turns in two
                // scratch buffers.
                let n = x.nrows();
                let (first, rest) = factors.split_first().expect("a product has factors");
                let (mut input, mut next) = (scratch::take::<f32>(), scratch::take::<f32>());
                for (i, m) in rest.iter().rev().enumerate() {
                    next.resize(n * m.rows(), 0.0);
                    if i == 0 {
                        m.mul_transposed_into(x, &mut next);
                    } else {
                        let from = ArrayView2::from_shape((n, m.cols()), &input[..])
                            .expect("a factor's columns");
                        m.mul_transposed_into(from, &mut next);
                    }
                    std::mem::swap(&mut input, &mut next);
                }
                let last = ArrayView2::from_shape((n, first.cols()), &input[..])
                    .expect("a factor's columns");
                first.mul_transposed_into(last, out);
                scratch::give(input);
                scratch::give(next);
            }
            Matrix::Sparse(_) if x.nrows() >= 4 => {
                // Batches: (W · Xᵀ)ᵀ, so the sparse kernel streams contiguous rows of Xᵀ.
                let xt = x.t().as_standard_layout().into_owned();
                copy_transposed(self.mul_rows(0, rows, xt.view()).view(), out);
            }
            Matrix::Sparse(csr) => {
                let work_per_row = csr.val.len() / csr.rows.max(1);
                for (xi, y) in x.rows().into_iter().zip(out.chunks_exact_mut(rows.max(1))) {
                    let xs = xi.as_standard_layout();
                    let xs = xs.as_slice().expect("standard layout");
                    parallel::split_rows(y, 1, 1, work_per_row, &|first, part| {
                        kernels::sparse_matvec(part, csr.block(first, part.len()), xs)
                    });
                }
            }
            Matrix::Winograd { dense, .. } => dense.mul_transposed_into(x, out),
            Matrix::Panels(_) => {
                // A fully connected layer is never packed; a caller that packs one gets the
                // row-major product of the same weights.
                self.clone().into_dense().mul_transposed_into(x, out)
            }
            Matrix::Signs(s) => {
                for (xi, y) in x.rows().into_iter().zip(out.chunks_exact_mut(rows.max(1))) {
                    let xs = xi.as_standard_layout();
                    let xs = xs.as_slice().expect("standard layout");
                    let total = signs::column_totals(xs, 1)[0];
                    parallel::split_rows(y, 1, 4, s.cols / 2, &|first, part| {
                        signs::rows_dot(part, s, first, xs, total)
                    });
                }
            }
        }
    }
}

/// `out = W[row_start.., :] · rhs`, then `epilogue` (indexed by the matrix's rows) in the
/// tiles' registers and `finish(row, rows)` on each thread's rows while they are in its cache
/// (as [`Matrix::mul_rows_into`]'s), on weights packed as channel panels: the output's rows
/// split over the threads a vector (16 rows) at a time, so that the parts are even where the
/// panels do not halve.
fn panels_product(
    out: &mut [f32],
    panels: &kernels::ChannelPanels,
    row_start: usize,
    (rhs, n): (&[f32], usize),
    epilogue: Epilogue<'_>,
    finish: &RowsFinish<'_>,
) {
    parallel::split_rows(out, n, 16, panels.cols() * n, &|first, part| {
        let from = row_start + first;
        let epilogue = epilogue.from_row(from);
        kernels::channel_panels_product(part, panels, from, rhs, n, epilogue);
        finish(from, part);
    })
}

/// `out[k] += residual[k]`: a residual `add` fused into the layer before it, on one thread's
/// part of that layer's output just after its epilogue, so the same operation on the same
/// values as the `add` layer (whose operands' order cannot change a sum of two). Run as a
/// layer of its own, the add read the part back from whichever core had written it, and
/// waited for a split of its own.
fn add_residual(out: &mut [f32], residual: Option<&[f32]>) {
    if let Some(residual) = residual {
        kernels::add_to_row(out, residual);
    }
}

/// `out = mᵀ`, row-major.
fn copy_transposed(m: ArrayView2<'_, f32>, out: &mut [f32]) {
    let rows = m.nrows();
    for (c, column) in m.columns().into_iter().enumerate() {
        for (r, &v) in column.iter().enumerate() {
            out[c * rows + r] = v;
        }
    }
}

/// `out = w · rhs` for row-major `w` (`cols` wide, one row per output row) and `rhs` (`n`
/// wide), the output's rows split over the threads. Each row's result does not depend on the
/// split ([`kernels::product`]).
fn product_rows(out: &mut [f32], w: &[f32], cols: usize, rhs: &[f32], n: usize) {
    parallel::split_rows(out, n, 16, cols * n, &|first, part| {
        kernels::product(part, &w[first * cols..], cols, rhs, n)
    });
}

/// `out = w · rhs` then the epilogue, on the AVX-512 kernel ([`kernels::product_columns`]),
/// for an output view `rows × n` (rows any distance apart) and `rhs` `n` wide: split over the
/// threads by rows, or by columns where [`splits_by_columns`] says. Each element's bits are
/// the same either way.
fn split_product(
    out: ndarray::ArrayViewMut2<'_, f32>,
    w: &[f32],
    cols: usize,
    rhs: &[f32],
    epilogue: Epilogue<'_>,
    residual: Option<ArrayView2<'_, f32>>,
) {
    let (rows, n) = out.dim();
    // A part's residual, of the part's shape, and its addition row by row.
    let add = |mut part: ndarray::ArrayViewMut2<'_, f32>, residual: Option<ArrayView2<'_, f32>>| {
        let Some(residual) = residual else { return };
        for (mut row, from) in part.rows_mut().into_iter().zip(residual.rows()) {
            let row = row.as_slice_mut().expect("a row is contiguous");
            kernels::add_to_row(row, from.as_slice().expect("a row is contiguous"));
        }
    };
    if splits_by_columns(rows, cols, n) {
        parallel::split(out, Axis(1), 48, rows * cols, &|first, mut part| {
            let rhs = (&rhs[first..], n);
            kernels::product_columns(part.view_mut(), w, cols, rhs, epilogue);
            let columns = first..first + part.ncols();
            add(part, residual.map(|r| r.slice_move(s![.., columns])));
        })
    } else {
        parallel::split(out, Axis(0), 16, cols * n, &|first, mut part| {
            let rhs = (rhs, n);
            let epilogue = epilogue.from_row(first);
            kernels::product_columns(part.view_mut(), &w[first * cols..], cols, rhs, epilogue);
            let rows = first..first + part.nrows();
            add(part, residual.map(|r| r.slice_move(s![rows, ..])));
        })
    }
}

/// Whether the threads split a 1×1 convolution's product over `n` pixels by rows (output
/// channels), each thread then reading the whole input, where it splits at all.
pub(crate) fn splits_by_rows(weight: &Matrix<'_>, n: usize) -> bool {
    match weight {
        Matrix::Dense { rows, cols, .. } => !splits_by_columns(*rows, *cols, n),
        // Channel panels, CSR rows and factors split by rows.
        _ => true,
    }
}

/// Whether the threads split a product `rows × depth` by `n` columns rather than by rows:
/// where the rows are too few to give each thread a packed tile's worth (16–32-channel
/// layers), and where the right-hand side is wide and the weights small, so that each thread
/// packs only its own columns instead of all of them, and reads back the pixels it wrote.
fn splits_by_columns(rows: usize, depth: usize, n: usize) -> bool {
    const MIN_COLUMNS: usize = 4 * 48;
    kernels::own_kernel_available()
        && n >= 2 * MIN_COLUMNS
        && (rows < 64 || (n >= 1024 && rows * depth * 4 <= 1 << 20))
}

/// What [`Matrix::mul_rows_into`] runs on each thread's finished rows: the index of the first
/// row in the matrix, and the rows.
pub type RowsFinish<'f> = dyn Fn(usize, &mut [f32]) + Sync + 'f;

/// Each channel's bias, then the activation, on rows of output channels `n` wide, the first of
/// them channel `channel` ([`kernels::finish_rows`]).
pub(crate) fn finish_channels(
    rows: &mut [f32],
    n: usize,
    channel: usize,
    bias: Option<&[f32]>,
    activation: Activation,
) {
    let epilogue = Epilogue {
        bias: bias.map(|b| &b[channel..]),
        activation,
    };
    let n = n.max(1);
    kernels::finish_rows(rows, n, rows.len() / n, n, epilogue);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dParams {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// top, left, bottom, right
    pub padding: [usize; 4],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl Conv2dParams {
    /// A 1×1 window, stride 1, no padding and one group: the product of the weights and the
    /// input as it lies, which the loader's fusions and the arena's placement look for.
    pub fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.padding == [0; 4] && self.groups == 1
    }

    pub fn output_size(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let eff = |k: usize, d: usize| d * (k - 1) + 1;
        let hp = h + self.padding[0] + self.padding[2];
        let wp = w + self.padding[1] + self.padding[3];
        let (kh, kw) = (
            eff(self.kernel[0], self.dilation[0]),
            eff(self.kernel[1], self.dilation[1]),
        );
        if hp < kh || wp < kw || self.stride[0] == 0 || self.stride[1] == 0 {
            return None;
        }
        Some((
            (hp - kh) / self.stride[0] + 1,
            (wp - kw) / self.stride[1] + 1,
        ))
    }
}

/// The output positions `o` whose input `o * stride + offset` lies in `0..len`, as a range
/// clipped to `0..out_len`.
fn inside(offset: isize, stride: usize, len: usize, out_len: usize) -> std::ops::Range<usize> {
    let start = if offset >= 0 {
        0
    } else {
        offset.unsigned_abs().div_ceil(stride).min(out_len)
    };
    let end = if len as isize <= offset {
        0
    } else {
        ((len as isize - offset) as usize)
            .div_ceil(stride)
            .min(out_len)
    };
    start..end.max(start)
}

/// im2col for one image and one group into `out`, `[cg * kh * kw, oh * ow]` row-major, every
/// value written (the padding's positions with zeros, so the buffer need not be zeroed first:
/// zeroing MobileNetV2's first layer's tiles took as long as filling them). Per kernel offset
/// it computes the output rows and columns that read inside the image, so padding is never
/// tested in the loops, and copies whole runs when the stride is 1.
#[allow(clippy::too_many_arguments)]
fn im2col(
    x: ArrayView4<'_, f32>,
    n: usize,
    c0: usize,
    cg: usize,
    p: &Conv2dParams,
    out_rows: std::ops::Range<usize>,
    ow: usize,
    out: &mut [f32],
) {
    let (h, w) = (x.dim().2, x.dim().3);
    let [kh, kw] = p.kernel;
    let (first, oh) = (out_rows.start, out_rows.len());
    let image = x.slice(s![n, c0..c0 + cg, .., ..]);
    let image = image.as_standard_layout();
    let image = image.as_slice().expect("standard layout");
    let mut rows = out.chunks_exact_mut((oh * ow).max(1));
    for plane in image.chunks_exact(h * w) {
        for ky in 0..kh {
            let off_y = (ky * p.dilation[0]) as isize - p.padding[0] as isize;
            // The output rows of this tile that read inside the image, counted from the
            // tile's first row.
            let all = inside(off_y, p.stride[0], h, out_rows.end);
            let oys = all.start.max(first) - first..all.end.max(first) - first;
            for kx in 0..kw {
                let dst = rows.next().expect("one row per kernel offset");
                let off_x = (kx * p.dilation[1]) as isize - p.padding[1] as isize;
                let oxs = inside(off_x, p.stride[1], w, ow);
                if oys.is_empty() || oxs.is_empty() {
                    dst.fill(0.0);
                    continue;
                }
                dst[..oys.start * ow].fill(0.0);
                dst[oys.end * ow..].fill(0.0);
                if oxs.len() < ow {
                    for row in dst[oys.start * ow..oys.end * ow].chunks_exact_mut(ow) {
                        row[..oxs.start].fill(0.0);
                        row[oxs.end..].fill(0.0);
                    }
                }
                // The first input read, and the steps between output rows.
                let iy = (((oys.start + first) * p.stride[0]) as isize + off_y) as usize;
                let ix = ((oxs.start * p.stride[1]) as isize + off_x) as usize;
                copy_rows(
                    &mut dst[oys.start * ow + oxs.start..],
                    ow,
                    &plane[iy * w + ix..],
                    p.stride[0] * w,
                    p.stride[1],
                    oys.len(),
                    oxs.len(),
                );
            }
        }
    }
}

/// `count` runs of `len` values: run `r` reads `src[r * src_step + k * stride]` and writes
/// `dst[r * dst_step + k]`. Compiled for AVX2 too, with the offsets advanced rather than
/// recomputed: on LeNet-5's second convolution (4,000 runs of 8 values per image) the
/// per-run bookkeeping, not the copying, was im2col's cost.
#[multiversion::multiversion(targets("x86_64+avx2+fma", "aarch64+neon"))]
fn copy_rows(
    dst: &mut [f32],
    dst_step: usize,
    src: &[f32],
    src_step: usize,
    stride: usize,
    count: usize,
    len: usize,
) {
    for r in 0..count {
        let d = &mut dst[r * dst_step..r * dst_step + len];
        if stride == 1 {
            let s = &src[r * src_step..r * src_step + len];
            // Eight at a time, each a fixed-size copy that is inlined; a run-length
            // `copy_from_slice` is a call to `memcpy` per run.
            let (d8, d_rest) = d.as_chunks_mut::<8>();
            let (s8, s_rest) = s.as_chunks::<8>();
            for (d, s) in d8.iter_mut().zip(s8) {
                *d = *s;
            }
            for (d, s) in d_rest.iter_mut().zip(s_rest) {
                *d = *s;
            }
        } else if stride == 2 {
            // Pairs, of which the first: LLVM turns this into vector shuffles, where
            // `step_by(2)` stayed one value at a time (MobileNetV2's and Xception's first
            // layers).
            let (pairs, _) = src[r * src_step..].as_chunks::<2>();
            for (d, pair) in d.iter_mut().zip(pairs) {
                *d = pair[0];
            }
            if pairs.len() < len {
                d[len - 1] = src[r * src_step + 2 * (len - 1)];
            }
        } else {
            let s = src[r * src_step..].iter().step_by(stride);
            for (d, s) in d.iter_mut().zip(s) {
                *d = *s;
            }
        }
    }
}

/// The most bytes of im2col a convolution builds at once: a tile of output rows whose columns,
/// with the weights, stay in a core's L2 cache for the product.
const IM2COL_TILE_BYTES: usize = 512 << 10;

/// 2-D convolution. `weight` is `[cout, cin / groups * kh * kw]`.
pub fn conv2d(
    x: ArrayView4<'_, f32>,
    weight: &Matrix<'_>,
    bias: Option<&[f32]>,
    p: &Conv2dParams,
) -> Array4<f32> {
    conv2d_activated(x, weight, bias, p, Activation::None)
}

/// [`conv2d`] followed by `activation`, both applied to each part of the output as it is
/// computed.
pub fn conv2d_activated(
    x: ArrayView4<'_, f32>,
    weight: &Matrix<'_>,
    bias: Option<&[f32]>,
    p: &Conv2dParams,
    activation: Activation,
) -> Array4<f32> {
    let (n, _, h, w) = x.dim();
    let (oh, ow) = p.output_size(h, w).expect("a valid window");
    let mut out = Array4::<f32>::zeros((n, weight.rows(), oh, ow));
    let dst = out.as_slice_mut().expect("a fresh array is contiguous");
    conv2d_into(x, weight, bias, p, activation, dst);
    out
}

/// [`conv2d_activated`] written into `out` (`[n, cout, oh, ow]` row-major, every element
/// overwritten, whatever it held). The scratch it needs (im2col tiles, padded planes) comes
/// from the thread's pool ([`scratch`]), so at batch 1 it allocates nothing once warm.
pub fn conv2d_into(
    x: ArrayView4<'_, f32>,
    weight: &Matrix<'_>,
    bias: Option<&[f32]>,
    p: &Conv2dParams,
    activation: Activation,
    out: &mut [f32],
) {
    conv2d_plus_into(x, weight, bias, p, activation, None, out)
}

/// Whether a convolution runs the images of a batch's group as one product
/// ([`pointwise_images`]): a 1×1 window at stride 1 with no padding and one group, over
/// dense weights, on the runtime's own kernels.
pub fn runs_images_together(weight: &Matrix<'_>, p: &Conv2dParams) -> bool {
    p.is_pointwise()
        && p.groups == 1
        && kernels::own_kernel_available()
        && match weight {
            Matrix::Dense { .. } => true,
            Matrix::Panels(_) => kernels::channel_panels_share_images(),
            _ => false,
        }
}

/// A 1×1 convolution ([`runs_images_together`]) of several images at once: image `g`'s
/// channels `xs[g]` (`[cin, plane]`) into `outs[g]` (`[cout, plane]`), with the bias, the
/// activation and then `residuals[g]` added. All the images' pixels are one product
/// ([`kernels::product_images`]), whose weights each tile reads once for the group; each value
/// gets the bits of [`conv2d_plus_into`] on its own image.
pub fn pointwise_images(
    xs: &[&[f32]],
    weight: &Matrix<'_>,
    bias: Option<&[f32]>,
    activation: Activation,
    residuals: &[Option<&[f32]>],
    outs: &mut [&mut [f32]],
) {
    let (rows, cols) = (weight.rows(), weight.cols());
    let plane = xs.first().map_or(0, |x| x.len() / cols.max(1));
    assert!(
        xs.iter().all(|x| x.len() == cols * plane) && outs.iter().all(|o| o.len() == rows * plane),
        "whole images of one shape"
    );
    let epilogue = Epilogue { bias, activation };
    match weight {
        Matrix::Dense { data, .. } => {
            kernels::product_images(outs, rows, data, cols, xs, plane, epilogue)
        }
        Matrix::Panels(panels) => {
            kernels::channel_panels_product_images(outs, panels, xs, plane, epilogue)
        }
        _ => panic!("dense weights or channel panels (runs_images_together)"),
    }
    for (out, residual) in outs.iter_mut().zip(residuals) {
        add_residual(out, *residual);
    }
}

/// [`conv2d_into`], then `out += residual` (laid out as `out`): a residual `add` fused into
/// the convolution before it. A 1×1 convolution's product adds it to each thread's part of
/// the output as soon as the part is done ([`add_residual`]); any other convolution, as a
/// pass over the whole output.
pub fn conv2d_plus_into(
    x: ArrayView4<'_, f32>,
    weight: &Matrix<'_>,
    bias: Option<&[f32]>,
    p: &Conv2dParams,
    activation: Activation,
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    if let Some(residual) = residual {
        assert_eq!(
            residual.len(),
            out.len(),
            "a residual of the output's shape"
        );
    }
    let add_after = |out: &mut [f32]| add_residual(out, residual);
    let (n, cin, h, w) = x.dim();
    let cout = weight.rows();
    let (oh, ow) = p.output_size(h, w).expect("checked at load");
    assert_eq!(
        out.len(),
        n * cout * oh * ow,
        "an output of the layer's shape"
    );
    let cg = cin / p.groups;
    let og = cout / p.groups;
    if p.groups == cin && cout == cin && !weight.is_sparse() {
        let Matrix::Dense { data, .. } = weight else {
            unreachable!("dense, checked above")
        };
        crate::depthwise::depthwise(x, data, bias, p, (oh, ow), activation, out);
        return add_after(out);
    }
    // Only where the transform holds (the loader makes `Winograd` weights for no other
    // layer); anything else multiplies the dense weights below.
    if let Matrix::Winograd { domain, .. } = weight
        && winograd::suits(p, cin, cout)
    {
        let x = x.as_standard_layout();
        let images = x.as_slice().expect("standard layout");
        let epilogue = Epilogue { bias, activation };
        let plane_out = (cout * oh * ow).max(1);
        for (image, image_out) in images
            .chunks_exact(cin * h * w)
            .zip(out.chunks_exact_mut(plane_out))
        {
            winograd::conv(image, (h, w), domain, p, (oh, ow), epilogue, image_out);
        }
        return add_after(out);
    }
    // A 1×1 convolution with stride 1 and no padding multiplies the input as it lies: each
    // image's channels are already the rows of the product's right-hand side.
    let pointwise = p.kernel == [1, 1] && p.stride == [1, 1] && p.padding == [0; 4];
    let x = x.as_standard_layout();
    let plane = oh * ow;
    let finish =
        |channel: usize, rows: &mut [f32]| finish_channels(rows, plane, channel, bias, activation);
    for (b, image_out) in out.chunks_exact_mut((cout * plane).max(1)).enumerate() {
        for (g, group_out) in image_out.chunks_exact_mut((og * plane).max(1)).enumerate() {
            let rows = g * og..(g + 1) * og;
            let first_value = (b * cout + rows.start) * plane;
            let group_residual = residual
                .filter(|_| pointwise)
                .map(|r| &r[first_value..first_value + og * plane]);
            if pointwise {
                let channels = x.slice(s![b, g * cg..(g + 1) * cg, .., ..]);
                let rhs = channels
                    .into_shape_with_order((cg, plane))
                    .expect("a standard-layout slice of whole planes");
                let epilogue = Epilogue { bias, activation };
                let rows = (rows.start, rows.end);
                weight.mul_rows_finished_into(group_out, rows, rhs, epilogue, group_residual);
            } else if let (Matrix::Dense { data, cols, .. }, true) = (
                weight,
                p.stride == [1, 1] && kernels::own_kernel_available(),
            ) {
                let image = x.slice(s![b, g * cg..(g + 1) * cg, .., ..]);
                let image = image.as_slice().expect("whole planes of a standard layout");
                let weights = &data[rows.start * cols..rows.end * cols];
                let epilogue = Epilogue { bias, activation }.from_row(rows.start);
                let shape = (cg, h, w);
                shifted_conv(
                    image,
                    shape,
                    (weights, *cols),
                    p,
                    (oh, ow),
                    epilogue,
                    group_out,
                );
            } else if let (Matrix::Dense { data, .. }, true) =
                (weight, kernels::few_channels_fit(cin, cout, p))
            {
                let image = x.slice(s![b, .., .., ..]);
                let image = image.as_slice().expect("whole planes of a standard layout");
                let epilogue = Epilogue { bias, activation };
                let (input, output) = ((cin, h, w), (oh, ow));
                kernels::few_channels_conv(image, input, data, p, output, epilogue, group_out);
            } else if let Matrix::Dense { data, cols, .. } = weight {
                // im2col a few output rows at a time, so that the copy stays in cache for the
                // product that reads it (a whole VGG16 layer's is 115 MB at 224×224).
                let w = &data[rows.start * cols..rows.end * cols];
                let tile_rows = (IM2COL_TILE_BYTES / (4 * cols * ow).max(1)).clamp(1, oh.max(1));
                if oh > tile_rows && kernels::own_kernel_available() {
                    let epilogue = Epilogue { bias, activation }.from_row(rows.start);
                    let image = (x.view(), b, g * cg, cg);
                    let shape = ((oh, ow), tile_rows);
                    im2col_tiles_on_threads(image, p, shape, (w, *cols), epilogue, group_out);
                    continue;
                }
                for oy in (0..oh).step_by(tile_rows) {
                    let tile = oy..(oy + tile_rows).min(oh);
                    let at = tile.start * ow;
                    let n = tile.len() * ow;
                    scratch::with_len(cols * n, |im| {
                        im2col(x.view(), b, g * cg, cg, p, tile, ow, im);
                        let im = &*im;
                        if kernels::own_kernel_available() {
                            // The tile's columns of every output row, `plane` apart.
                            let mut view =
                                ndarray::ArrayViewMut2::from_shape((og, plane), &mut *group_out)
                                    .expect("og × plane");
                            let tile_view = view.slice_mut(s![.., at..at + n]);
                            let epilogue = Epilogue { bias, activation }.from_row(rows.start);
                            return split_product(tile_view, w, *cols, im, epilogue, None);
                        }
                        parallel::split_rows(group_out, plane, 16, cols * n, &|first, part| {
                            let count = part.len() / plane.max(1);
                            // Without AVX-512, the `gemm` crate.
                            kernels::gemm_crate_product_strided(
                                &mut part[at..],
                                plane,
                                count,
                                &w[first * cols..],
                                *cols,
                                im,
                                n,
                            );
                            for (r, row) in part.chunks_exact_mut(plane.max(1)).enumerate() {
                                let channel = rows.start + first + r;
                                finish_channels(&mut row[at..at + n], n, channel, bias, activation);
                            }
                        });
                    });
                }
            } else {
                let k = cg * p.kernel[0] * p.kernel[1];
                scratch::with_len(k * plane, |im| {
                    im2col(x.view(), b, g * cg, cg, p, 0..oh, ow, im);
                    let im = ArrayView2::from_shape((k, plane), &*im).expect("im2col's shape");
                    weight.mul_rows_into(group_out, rows.start, rows.end, im, &finish);
                });
            }
        }
    }
    if !pointwise {
        add_after(out);
    }
}

/// A convolution through im2col tiles of at most `most_rows` output rows (the rows of
/// [`IM2COL_TILE_BYTES`]), as many tiles as the threads can share evenly, each thread
/// copying and multiplying whole tiles of its own. (The tiles' copies ran on the calling
/// thread, only their products split: on MobileNetV2's first layer, 3 → 32 channels at
/// stride 2, two threads took 0.32 ms against one thread's 0.42.)
fn im2col_tiles_on_threads(
    (x, b, first_channel, cg): (ArrayView4<'_, f32>, usize, usize, usize),
    p: &Conv2dParams,
    ((oh, ow), most_rows): ((usize, usize), usize),
    (w, cols): (&[f32], usize),
    epilogue: Epilogue<'_>,
    out: &mut [f32],
) {
    let plane = oh * ow;
    // An even number of tiles, so that two threads take the same share.
    let tiles = oh.div_ceil(most_rows).next_multiple_of(2);
    let tile_rows = oh.div_ceil(tiles);
    let view = ndarray::ArrayViewMut2::from_shape((out.len() / plane.max(1), plane), out)
        .expect("whole output planes");
    let work = view.nrows() * cols;
    parallel::split(view, Axis(1), tile_rows * ow, work, &|first, mut part| {
        let first_row = first / ow.max(1);
        let rows = part.ncols() / ow.max(1);
        for oy in (first_row..first_row + rows).step_by(tile_rows) {
            let tile = oy..(oy + tile_rows).min(first_row + rows);
            let (at, n) = ((tile.start - first_row) * ow, tile.len() * ow);
            scratch::with_len(cols * n, |im| {
                im2col(x, b, first_channel, cg, p, tile, ow, im);
                let tile_view = part.slice_mut(s![.., at..at + n]);
                kernels::product_columns(tile_view, w, cols, (im, n), epilogue);
            });
        }
    });
}

/// The most bytes of zero-padded input a [`shifted_conv`] band copies, and of output rows it
/// computes: with the weights, what a core's L2 holds while the product packs its panels.
const SHIFTED_BAND_BYTES: usize = 1 << 20;

/// A stride-1 convolution of one image's group (`cg` planes `h × w` in `image`) without
/// im2col. A band of output rows at a time, the input rows it reads are copied into
/// zero-padded planes `pw = w + left + right` wide; output `(oy, ox)` is then the weights
/// times the window at padded position `oy·pw + ox` of every plane, so computing `pw`-wide
/// output rows makes each step of the depth (a channel and a window tap) one contiguous run of
/// a plane, shifted by the tap ([`kernels::shifted_product`], which packs those runs straight
/// into its panels). The `pw − ow` extra columns of each row are computed and dropped as the
/// rows are copied into `out`, with the bias and activation.
///
/// In place of the im2col tiles on the `gemm` crate (see `docs/performance.md`).
fn shifted_conv(
    image: &[f32],
    (cg, h, w): (usize, usize, usize),
    (weights, cols): (&[f32], usize),
    p: &Conv2dParams,
    (oh, ow): (usize, usize),
    epilogue: Epilogue<'_>,
    out: &mut [f32],
) {
    let [_, left, _, right] = p.padding;
    let pw = w + left + right;
    let [kh, kw] = p.kernel;
    let (dy, dx) = (p.dilation[0], p.dilation[1]);
    let plane_out = oh * ow;
    let og = weights.len() / cols.max(1);
    let mut taps = scratch::take::<usize>();
    taps.extend((0..kh).flat_map(|ky| (0..kw).map(move |kx| ky * dy * pw + kx * dx)));
    // Both the band's padded input and its computed rows (`pw` wide, for every output
    // channel) within the bound: on a 3-channel input the output rows are the larger (64
    // channels of VGG16's first layer at 224×226 were 13 MB for one whole-image band).
    let band = SHIFTED_BAND_BYTES / (4 * cg.max(og) * pw).max(1);
    let band = band.clamp(1, oh.max(1));
    let shape = Band {
        image,
        input: (cg, h, w),
        p,
        pw,
        ow,
        taps: &taps,
    };
    let view = ndarray::ArrayViewMut2::from_shape((og, plane_out), out).expect("og × plane");
    if oh.div_ceil(band) >= 4 {
        // Enough bands to go round: each thread takes whole bands, copies their input itself
        // and computes every channel of them, so no band is packed twice.
        let work = og * cols * pw;
        parallel::split(view, Axis(1), band * ow, work, &|first, mut part| {
            let first_row = first / ow.max(1);
            let rows = part.ncols() / ow.max(1);
            for oy0 in (first_row..first_row + rows).step_by(band) {
                let band_rows = band.min(first_row + rows - oy0);
                let at = (oy0 - first_row) * ow;
                let strip = part.slice_mut(s![.., at..at + band_rows * ow]);
                scratch::with(|padded: &mut Vec<f32>| {
                    let plane = shape.fill(oy0, band_rows, padded);
                    let operands = (&padded[..], plane, weights, cols);
                    shape.product(operands, band_rows, strip, epilogue);
                });
            }
        });
    } else {
        // Few bands: each is copied once and its output channels split over the threads.
        let mut view = view;
        for oy0 in (0..oh).step_by(band) {
            let band_rows = band.min(oh - oy0);
            let strip = view.slice_mut(s![.., oy0 * ow..(oy0 + band_rows) * ow]);
            scratch::with(|padded: &mut Vec<f32>| {
                let plane = shape.fill(oy0, band_rows, padded);
                let work = cols * band_rows * pw;
                parallel::split(strip, Axis(0), 16, work, &|first, part| {
                    let w = &weights[first * cols..];
                    let operands = (&padded[..], plane, w, cols);
                    shape.product(operands, band_rows, part, epilogue.from_row(first));
                });
            });
        }
    }
    scratch::give(taps);
}

/// A [`shifted_conv`]'s input and how it is cut into bands of output rows.
struct Band<'a> {
    image: &'a [f32],
    input: (usize, usize, usize),
    p: &'a Conv2dParams,
    pw: usize,
    ow: usize,
    taps: &'a [usize],
}

impl Band<'_> {
    /// Copies the padded input rows that output rows `oy0..oy0 + band_rows` read, every
    /// channel, into `padded` (zero elsewhere, and past the last plane the values its last
    /// row's dropped columns read); returns the length of one plane.
    fn fill(&self, oy0: usize, band_rows: usize, padded: &mut Vec<f32>) -> usize {
        let (cg, h, w) = self.input;
        let (top, left) = (self.p.padding[0], self.p.padding[1]);
        let [kh, kw] = self.p.kernel;
        let reach_y = self.p.dilation[0] * (kh - 1);
        let reach_x = self.p.dilation[1] * (kw - 1);
        let plane = (band_rows + reach_y) * self.pw;
        padded.clear();
        padded.resize(cg * plane + reach_x, 0.0);
        for (c, dst) in padded.chunks_exact_mut(plane).enumerate() {
            for (r, row) in dst.chunks_exact_mut(self.pw).enumerate() {
                let iy = (oy0 + r).checked_sub(top).filter(|&iy| iy < h);
                if let Some(iy) = iy {
                    let src = &self.image[(c * h + iy) * w..(c * h + iy + 1) * w];
                    row[left..left + w].copy_from_slice(src);
                }
            }
        }
        plane
    }

    /// The band's output rows for the channels of `out` (`weights` from its first), each
    /// computed `pw` wide and its first `ow` values copied into its row of `out`.
    fn product(
        &self,
        (padded, plane, weights, cols): (&[f32], usize, &[f32], usize),
        band_rows: usize,
        mut out: ndarray::ArrayViewMut2<'_, f32>,
        epilogue: Epilogue<'_>,
    ) {
        let (pw, ow) = (self.pw, self.ow);
        let n = band_rows * pw;
        let count = out.nrows();
        // Every value is written by the product before it is copied out.
        scratch::with_len(count * n, |computed: &mut [f32]| {
            let operands = (padded, plane, self.taps);
            kernels::shifted_product(computed, n, count, weights, cols, operands, n, epilogue);
            for (rows, mut dst) in computed.chunks_exact(n).zip(out.rows_mut()) {
                let dst = dst.as_slice_mut().expect("a contiguous row");
                for (d, src) in dst.chunks_exact_mut(ow).zip(rows.chunks(pw)) {
                    d.copy_from_slice(&src[..ow]);
                }
            }
        });
    }
}

/// Fully connected: `x [n, in] · Wᵀ + b`.
pub fn dense(x: ArrayView2<'_, f32>, weight: &Matrix<'_>, bias: Option<&[f32]>) -> Array2<f32> {
    let mut y = Array2::<f32>::zeros((x.nrows(), weight.rows()));
    dense_into(
        x,
        weight,
        bias,
        y.as_slice_mut().expect("a fresh array is contiguous"),
    );
    y
}

/// [`dense`] written into `out` (`[n, out]` row-major, every element overwritten).
pub fn dense_into(
    x: ArrayView2<'_, f32>,
    weight: &Matrix<'_>,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    weight.mul_transposed_into(x, out);
    if let Some(bias) = bias {
        for row in out.chunks_exact_mut(weight.rows().max(1)) {
            row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolParams {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 4],
}

impl PoolParams {
    pub fn output_size(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        Conv2dParams {
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
            dilation: [1, 1],
            groups: 1,
        }
        .output_size(h, w)
    }
}

/// Max or average pooling. Padded positions never win a max and are left out of an average
/// (spec §7).
pub fn pool2d(x: ArrayView4<'_, f32>, p: &PoolParams, max: bool) -> Array4<f32> {
    let (n, c, h, w) = x.dim();
    let (oh, ow) = p.output_size(h, w).expect("checked at load");
    let mut out = Array4::<f32>::zeros((n, c, oh, ow));
    pool2d_into(x, p, max, out.as_slice_mut().expect("standard layout"));
    out
}

/// [`pool2d`] written into `out` (`[n, c, oh, ow]` row-major, every element overwritten).
pub fn pool2d_into(x: ArrayView4<'_, f32>, p: &PoolParams, max: bool, dst: &mut [f32]) {
    let (_, _, h, w) = x.dim();
    let (oh, ow) = p.output_size(h, w).expect("checked at load");
    let x = x.as_standard_layout();
    let src = x.as_slice().expect("standard layout");
    let (plane_in, plane_out) = (h * w, oh * ow);
    let work = p.kernel[0] * p.kernel[1] * plane_out;
    // Planes are independent: split over the threads.
    #[cfg(target_arch = "x86_64")]
    if max && stride2_max_fits(p, (h, w), (oh, ow)) {
        let (top, left) = (p.padding[0], p.padding[1]);
        let geometry = kernels::window_max_blocks::Geometry {
            input: (h, w),
            origin: (top, left),
            window: (p.kernel[0], p.kernel[1]),
            output: (oh, ow),
        };
        if kernels::window_max_blocks::fits(&geometry) {
            parallel::split_rows(dst, plane_out.max(1), 1, work, &|first, part| {
                let (mut block, mut maxima) = (scratch::take(), scratch::take());
                let buffers = (&mut block, &mut maxima);
                kernels::window_max_blocks::planes(src, &geometry, (first, part), buffers);
                scratch::give(block);
                scratch::give(maxima);
            });
            return;
        }
        let window = ((top, left), (p.kernel[0], p.kernel[1]));
        parallel::split_rows(dst, plane_out.max(1), 1, work, &|first, part| {
            for (i, out_plane) in part.chunks_exact_mut(plane_out.max(1)).enumerate() {
                let plane = &src[(first + i) * plane_in..(first + i + 1) * plane_in];
                kernels::window_max::plane_max(plane, (h, w), window, out_plane, (oh, ow))
            }
        });
        return;
    }
    parallel::split_rows(dst, plane_out.max(1), 1, work, &|first, part| {
        let (mut rows, mut phases) = (scratch::take::<f32>(), scratch::take::<f32>());
        // Every plane's windows cover the same columns.
        let mut cols = scratch::take::<(usize, usize)>();
        cols.extend(column_spans(w, ow, p));
        for (i, out_plane) in part.chunks_exact_mut(plane_out.max(1)).enumerate() {
            let plane = &src[(first + i) * plane_in..(first + i + 1) * plane_in];
            // 2×2 windows without a stride of 2 on AVX-512 take the loop of `pool_plane`.
            let strided_max = p.stride[1] == 2 && kernels::window_max_available();
            if max && (p.kernel != [2, 2] || strided_max) {
                max_pool_plane(plane, out_plane, (h, w), &cols, p, (&mut rows, &mut phases));
            } else if max {
                pool_plane::<true>(plane, out_plane, (h, w), (oh, ow), p);
            } else {
                pool_plane::<false>(plane, out_plane, (h, w), (oh, ow), p);
            }
        }
        scratch::give(rows);
        scratch::give(phases);
        scratch::give(cols);
    });
}

/// Whether a max pooling runs whole planes on `window_max::plane_max` (AVX-512F or AVX2),
/// stride 2 both ways, a window 2 or 3 wide, and no window wholly in the padding.
#[cfg(target_arch = "x86_64")]
fn stride2_max_fits(p: &PoolParams, (h, w): (usize, usize), (oh, ow): (usize, usize)) -> bool {
    let nonempty = |o: usize, pad: usize, k: usize, len: usize| {
        let (lo, hi) = window_span(o, 2, pad, k, len);
        lo < hi
    };
    p.stride == [2, 2]
        && kernels::window_max::plane_max_fits(p.kernel[1])
        && (0..oh).all(|oy| nonempty(oy, p.padding[0], p.kernel[0], h))
        && (0..ow).all(|ox| nonempty(ox, p.padding[1], p.kernel[1], w))
}

/// The input positions `lo..hi` a pooling window at output `o` covers, clipped to `0..len`.
fn window_span(o: usize, stride: usize, pad: usize, k: usize, len: usize) -> (usize, usize) {
    let a = (o * stride) as isize - pad as isize;
    let lo = a.max(0) as usize;
    let hi = ((a + k as isize).min(len as isize)).max(0) as usize;
    (lo, hi.max(lo))
}

/// The input columns each of `ow` output columns' windows covers, clipped to `0..w`.
fn column_spans(w: usize, ow: usize, p: &PoolParams) -> impl Iterator<Item = (usize, usize)> {
    (0..ow).map(move |ox| window_span(ox, p.stride[1], p.padding[1], p.kernel[1], w))
}

/// Max pooling in two passes: each input row's maxima over the window's columns (`rows`, `ow`
/// wide), then the output row as the elementwise maximum of its window's rows. Both passes are
/// elementwise maxima of contiguous runs, which vectorise: in the first, each column tap of the
/// window reads the input columns `ox·stride + tap − pad`, which are one contiguous run of the
/// row's phase `(tap − pad) mod stride` (its columns split by their remainder modulo the
/// stride, in `phases`). A maximum does not depend on the order it is taken in, so this gives
/// the same values as taking each window whole. An empty window gives 0. Compiled for AVX-512
/// and AVX2 too: in the baseline's four lanes, with the comparisons that make `f32::max` skip
/// a NaN, pooling was 7% of Xception's time.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx2+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
fn max_pool_plane(
    plane: &[f32],
    out: &mut [f32],
    (h, w): (usize, usize),
    cols: &[(usize, usize)],
    p: &PoolParams,
    (rows, phases): (&mut Vec<f32>, &mut Vec<f32>),
) {
    let ow = cols.len();
    let stride = p.stride[1].max(1);
    // Phase `q` holds columns `q, q + stride, …`: `phase_len` of them, the last padded.
    let phase_len = w.div_ceil(stride);
    #[cfg(target_arch = "x86_64")]
    if stride == 2
        && p.kernel[1] <= kernels::window_max::MAX_TAPS
        && kernels::window_max_available()
    {
        // Every row maximum is written below: the buffer needs its length, not a fill
        // (a pass over 100 KB per plane of VGG16's first pooling).
        rows.resize(h * ow, f32::NEG_INFINITY);
        let window = (p.padding[1], p.kernel[1]);
        // SAFETY: the CPU has AVX-512F (checked above).
        unsafe { kernels::window_max::rows_maxima_stride2(plane, w, window, rows, ow) };
        return max_of_window_rows(out, rows, cols, (h, ow), p);
    }
    rows.clear();
    rows.resize(h * ow, f32::NEG_INFINITY);
    phases.clear();
    phases.resize(stride * phase_len, f32::NEG_INFINITY);
    for (in_row, row_max) in plane
        .chunks_exact(w.max(1))
        .zip(rows.chunks_exact_mut(ow.max(1)))
    {
        let row = if stride == 1 {
            in_row
        } else {
            for (q, phase) in phases.chunks_exact_mut(phase_len).enumerate() {
                for (d, &v) in phase
                    .iter_mut()
                    .zip(in_row[q.min(w)..].iter().step_by(stride))
                {
                    *d = v;
                }
            }
            &phases[..]
        };
        for tap in 0..p.kernel[1] {
            let offset = tap as isize - p.padding[1] as isize;
            let oxs = inside(offset, stride, w, ow);
            if oxs.is_empty() {
                continue;
            }
            // The first input column read, then its phase and place in the phase.
            let x0 = (oxs.start * stride) as isize + offset;
            let x0 = x0 as usize;
            let from = (x0 % stride) * phase_len + x0 / stride;
            let src = &row[from..from + oxs.len()];
            row_max[oxs]
                .iter_mut()
                .zip(src)
                .for_each(|(m, &v)| *m = m.max(v));
        }
    }
    max_of_window_rows(out, rows, cols, (h, ow), p)
}

/// The second pass of [`max_pool_plane`]: each output row is the elementwise maximum of its
/// window's rows of `rows` (each input row's window maxima, `ow` wide); an empty window gives 0.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx2+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
fn max_of_window_rows(
    out: &mut [f32],
    rows: &[f32],
    cols: &[(usize, usize)],
    (h, ow): (usize, usize),
    p: &PoolParams,
) {
    // Only a padding wider than the window leaves a column's windows empty.
    let empty_columns = cols.iter().any(|&(xa, xb)| xa == xb);
    for (oy, out_row) in out.chunks_exact_mut(ow.max(1)).enumerate() {
        let (ya, yb) = window_span(oy, p.stride[0], p.padding[0], p.kernel[0], h);
        if ya == yb {
            out_row.fill(0.0);
            continue;
        }
        // The row maxima are never NaN (they start at −∞ and `max` skips a NaN), so starting
        // from the window's first two rows gives the values of starting from −∞; a copy of the
        // first alone would be a call to `memcpy` per row.
        let mut window = rows[ya * ow..yb * ow].chunks_exact(ow.max(1));
        let top = window.next().expect("a row in the window");
        let next = window.next().unwrap_or(top);
        for ((o, &a), &b) in out_row.iter_mut().zip(top).zip(next) {
            *o = a.max(b);
        }
        for row_max in window {
            out_row
                .iter_mut()
                .zip(row_max)
                .for_each(|(o, &v)| *o = o.max(v));
        }
        if empty_columns {
            for (o, &(xa, xb)) in out_row.iter_mut().zip(cols) {
                if xa == xb {
                    *o = 0.0;
                }
            }
        }
    }
}

fn pool_plane<const MAX: bool>(
    plane: &[f32],
    out: &mut [f32],
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    p: &PoolParams,
) {
    if p.kernel == [2, 2] && p.stride == [2, 2] && p.padding == [0; 4] {
        // The CNNs' usual 2×2/2 pooling: every window is whole, so two input rows give one
        // output row with no window arithmetic (the general loop below cost LeNet-5 a fifth
        // of its batch-1 time). Same order of operations, so the same bits.
        for (oy, out_row) in out.chunks_exact_mut(ow).enumerate() {
            let top = &plane[2 * oy * w..2 * oy * w + 2 * ow];
            let bottom = &plane[(2 * oy + 1) * w..(2 * oy + 1) * w + 2 * ow];
            for ((d, t), b) in out_row
                .iter_mut()
                .zip(top.chunks_exact(2))
                .zip(bottom.chunks_exact(2))
            {
                *d = if MAX {
                    t[0].max(t[1]).max(b[0]).max(b[1])
                } else {
                    (t[0] + t[1] + b[0] + b[1]) / 4.0
                };
            }
        }
        return;
    }
    let span = window_span;
    for oy in 0..oh {
        let (ya, yb) = span(oy, p.stride[0], p.padding[0], p.kernel[0], h);
        for ox in 0..ow {
            let (xa, xb) = span(ox, p.stride[1], p.padding[1], p.kernel[1], w);
            let count = (yb - ya) * (xb - xa);
            let mut acc = if MAX { f32::NEG_INFINITY } else { 0.0 };
            for y in ya..yb {
                for &v in &plane[y * w + xa..y * w + xb] {
                    acc = if MAX { acc.max(v) } else { acc + v };
                }
            }
            out[oy * ow + ox] = match (count, MAX) {
                (0, _) => 0.0,
                (_, true) => acc,
                (c, false) => acc / c as f32,
            };
        }
    }
}

pub fn global_avg_pool(x: ArrayView4<'_, f32>) -> Array2<f32> {
    let (n, c, _, _) = x.dim();
    let mut out = Array2::<f32>::zeros((n, c));
    global_avg_pool_into(x, out.as_slice_mut().expect("a fresh array is contiguous"));
    out
}

/// [`global_avg_pool`] written into `out` (`[n, c]` row-major).
pub fn global_avg_pool_into(x: ArrayView4<'_, f32>, out: &mut [f32]) {
    let (n, c, h, w) = x.dim();
    let x = x.as_standard_layout();
    let planes = x.as_slice().expect("standard layout");
    if h * w == 0 {
        out[..n * c].fill(0.0);
        return;
    }
    let plane = h * w;
    // Each plane as a contiguous one-dimensional view: its sum is ndarray's unrolled fold, the
    // bits of a slice of the four-dimensional array, without building that slice per channel
    // (MobileNetV2's 1280 channels of 7×7 took 0.06 ms that way).
    for (mean, values) in out[..n * c].iter_mut().zip(planes.chunks_exact(plane)) {
        *mean = ndarray::ArrayView1::from(values).sum() / plane as f32;
    }
}

/// `1 / (1 + e^−x)`.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `x · min(max(x + 3, 0), 6) / 6`.
pub fn hard_swish(x: f32) -> f32 {
    x * (x + 3.0).clamp(0.0, 6.0) / 6.0
}

/// `a × b` element-wise, or each channel of `a` (`[n, c, h, w]`) times `b[n, c]`.
pub fn mul(
    a: &ndarray::ArrayViewD<'_, f32>,
    b: &ndarray::ArrayViewD<'_, f32>,
) -> ndarray::ArrayD<f32> {
    if a.shape() == b.shape() {
        return a * b;
    }
    let (n, c) = (b.shape()[0], b.shape()[1]);
    let scale = b
        .view()
        .into_shape_with_order(ndarray::IxDyn(&[n, c, 1, 1]))
        .expect("a [n, c] scale");
    a * &scale
}

/// One side of an element-wise operation written into `out`: `out` itself (the operation
/// runs in place, over a value nothing reads afterwards), or another slice of `out`'s length.
#[derive(Clone, Copy)]
pub enum Operand<'s> {
    Out,
    Values(&'s [f32]),
}

/// What one value of an element-wise layer counts as, in multiply-adds, when the threads
/// decide whether to split it: a value read, another read or not, and one written take
/// about as long as eight multiply-adds of a product. So a layer of 16K values or more is
/// split between two threads, each part about as large as a product's smallest part.
const ELEMENT_WORK: usize = 8;

/// `f(at, part)` over `out` in parts of whole `row_len`-value rows, split over the threads
/// where the layer is large enough ([`ELEMENT_WORK`]); `at` is the part's first value. Each
/// thread then reads back the values it has just written: a layer that follows a split
/// product runs on the cores that hold its halves. (Run on one thread, MobileNetV2's adds
/// took twice as long at two threads as at one, reading the other core's half.)
pub fn split_elements(out: &mut [f32], row_len: usize, f: &(impl Fn(usize, &mut [f32]) + Sync)) {
    let row_len = if row_len > 0 && out.len().is_multiple_of(row_len) {
        row_len
    } else {
        out.len().max(1)
    };
    parallel::split_rows(out, row_len, 1, row_len * ELEMENT_WORK, &|first, part| {
        f(first * row_len, part)
    })
}

/// `out[k] = f(a[k], b[k])`, or with `per_channel`, `out[k] = f(a[k], b[k / plane])` where
/// `b` has one value per plane of `plane` values. The operands keep their order (`a` first),
/// so the bits are those of `a + b` or `a * b` on arrays. Without `per_channel` the values
/// are split over the threads in rows of `row_len` ([`split_elements`]).
pub fn binary_into(
    out: &mut [f32],
    a: Operand<'_>,
    b: Operand<'_>,
    (per_channel, row_len): (Option<usize>, usize),
    f: impl Fn(f32, f32) -> f32 + Sync,
) {
    fn part_of(operand: Operand<'_>, at: usize, len: usize) -> Operand<'_> {
        match operand {
            Operand::Out => Operand::Out,
            Operand::Values(v) => Operand::Values(&v[at..at + len]),
        }
    }
    match per_channel {
        None => split_elements(out, row_len, &|at, part| {
            let len = part.len();
            binary_part(part, part_of(a, at, len), part_of(b, at, len), &f)
        }),
        Some(plane) => binary_per_channel(out, a, b, plane, f),
    }
}

/// [`binary_into`] on one part: `out[k] = f(a[k], b[k])`.
fn binary_part(out: &mut [f32], a: Operand<'_>, b: Operand<'_>, f: &impl Fn(f32, f32) -> f32) {
    match (a, b) {
        (Operand::Out, Operand::Out) => out.iter_mut().for_each(|o| *o = f(*o, *o)),
        (Operand::Out, Operand::Values(b)) => {
            out.iter_mut().zip(b).for_each(|(o, &b)| *o = f(*o, b))
        }
        (Operand::Values(a), Operand::Out) => {
            out.iter_mut().zip(a).for_each(|(o, &a)| *o = f(a, *o))
        }
        (Operand::Values(a), Operand::Values(b)) => out
            .iter_mut()
            .zip(a.iter().zip(b))
            .for_each(|(o, (&a, &b))| *o = f(a, b)),
    }
}

/// [`binary_into`] with one `b` per plane of `plane` values.
fn binary_per_channel(
    out: &mut [f32],
    a: Operand<'_>,
    b: Operand<'_>,
    plane: usize,
    f: impl Fn(f32, f32) -> f32,
) {
    match (a, b) {
        (Operand::Out, Operand::Values(b)) => {
            for (o, &b) in out.chunks_exact_mut(plane.max(1)).zip(b) {
                o.iter_mut().for_each(|o| *o = f(*o, b));
            }
        }
        (Operand::Values(a), Operand::Values(b)) => {
            for ((o, a), &b) in out
                .chunks_exact_mut(plane.max(1))
                .zip(a.chunks_exact(plane.max(1)))
                .zip(b)
            {
                o.iter_mut().zip(a).for_each(|(o, &a)| *o = f(a, b));
            }
        }
        (_, Operand::Out) => unreachable!("a per-channel scale is never the output"),
    }
}

/// `[n, c, h, w]` with zeros around each plane: `padding` is top, left, bottom, right.
pub fn pad(x: ArrayView4<'_, f32>, padding: [usize; 4]) -> Array4<f32> {
    let (n, c, h, w) = x.dim();
    let [t, l, b, r] = padding;
    let mut out = Array4::<f32>::zeros((n, c, h + t + b, w + l + r));
    pad_into(
        x,
        padding,
        out.as_slice_mut().expect("a fresh array is contiguous"),
    );
    out
}

/// [`pad`] written into `out` (`[n, c, h + t + b, w + l + r]` row-major, whatever it held).
pub fn pad_into(x: ArrayView4<'_, f32>, padding: [usize; 4], out: &mut [f32]) {
    let (n, c, h, w) = x.dim();
    let [t, l, b, r] = padding;
    out.fill(0.0);
    let mut out = ndarray::ArrayViewMut4::from_shape((n, c, h + t + b, w + l + r), out)
        .expect("an output of the padded shape");
    out.slice_mut(s![.., .., t..t + h, l..l + w]).assign(&x);
}

/// Softmax over the last axis of `[n, k]`.
pub fn softmax(x: &mut Array2<f32>) {
    softmax_rows(x.view_mut())
}

/// [`softmax`] on a view: each row in place.
pub fn softmax_rows(mut x: ndarray::ArrayViewMut2<'_, f32>) {
    for mut row in x.axis_iter_mut(Axis(0)) {
        let m = row.fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        row.mapv_inplace(|v| (v - m).exp());
        let s = row.sum();
        row.mapv_inplace(|v| v / s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_hard_swish_and_channel_scaling_follow_the_spec() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert!((sigmoid(2.0) as f64 - 1.0 / (1.0 + (-2.0f64).exp())).abs() < 1e-7);
        assert_eq!(hard_swish(-4.0), -0.0);
        assert_eq!(hard_swish(1.0), 1.0 * 4.0 / 6.0);
        assert_eq!(hard_swish(5.0), 5.0);
        let a = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[1, 2, 1, 2]), |i| {
            (i[1] * 2 + i[3] + 1) as f32
        });
        let b =
            ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[1, 2]), vec![10.0, 100.0]).unwrap();
        let y = mul(&a.view(), &b.view());
        assert_eq!(
            y.iter().copied().collect::<Vec<_>>(),
            [10.0, 20.0, 300.0, 400.0]
        );
        assert_eq!(mul(&a.view(), &a.view())[[0, 1, 0, 1]], 16.0);
    }

    #[test]
    fn channel_panels_finish_each_row_as_the_row_major_weights_do() {
        if !kernels::channel_panels_available() {
            return;
        }
        let (rows, cols, n) = (70, 20, 9);
        let w = rand(rows * cols, 3);
        let x = Array2::from_shape_vec((cols, n), rand(cols * n, 4)).unwrap();
        let panels = Matrix::Panels(kernels::ChannelPanels::pack(&w, rows, cols).unwrap());
        let dense = Matrix::dense(w, rows, cols);
        // A finish that depends on each row's index and values.
        let finish = |row: usize, part: &mut [f32]| {
            for (r, values) in part.chunks_exact_mut(n).enumerate() {
                values
                    .iter_mut()
                    .for_each(|v| *v = *v * 0.5 + (row + r) as f32);
            }
        };
        for (start, end) in [(0, rows), (16, 64)] {
            let mut want = vec![f32::NAN; (end - start) * n];
            dense.mul_rows_into(&mut want, start, end, x.view(), &finish);
            let mut got = vec![f32::NAN; (end - start) * n];
            panels.mul_rows_into(&mut got, start, end, x.view(), &finish);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "rows {start}..{end}");
        }
    }

    #[test]
    fn pad_surrounds_each_plane_with_zeros() {
        let x = Array4::from_shape_fn((1, 2, 2, 2), |(_, c, y, x)| (c * 4 + y * 2 + x + 1) as f32);
        let y = pad(x.view(), [1, 0, 0, 2]);
        assert_eq!(y.dim(), (1, 2, 3, 4));
        assert_eq!(
            y.slice(s![0, 1, .., ..])
                .iter()
                .copied()
                .collect::<Vec<_>>(),
            [0., 0., 0., 0., 5., 6., 0., 0., 7., 8., 0., 0.]
        );
    }
    use ndarray::Array;

    use cxrm_format::testing::uniform as rand;

    /// The definition of a grouped, strided, padded, dilated convolution, loop by loop.
    fn conv_reference(
        x: &Array4<f32>,
        w: &[f32],
        bias: &[f32],
        cout: usize,
        p: &Conv2dParams,
    ) -> Array4<f32> {
        let (n, cin, h, wd) = x.dim();
        let (oh, ow) = p.output_size(h, wd).unwrap();
        let [kh, kw] = p.kernel;
        let cg = cin / p.groups;
        let og = cout / p.groups;
        let mut out = Array4::<f32>::zeros((n, cout, oh, ow));
        for b in 0..n {
            for o in 0..cout {
                let g = o / og;
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = bias[o] as f64;
                        for c in 0..cg {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (oy * p.stride[0] + ky * p.dilation[0]) as isize
                                        - p.padding[0] as isize;
                                    let ix = (ox * p.stride[1] + kx * p.dilation[1]) as isize
                                        - p.padding[1] as isize;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd
                                    {
                                        let wv = w[((o * cg + c) * kh + ky) * kw + kx];
                                        acc += (wv * x[[b, g * cg + c, iy as usize, ix as usize]])
                                            as f64;
                                    }
                                }
                            }
                        }
                        out[[b, o, oy, ox]] = acc as f32;
                    }
                }
            }
        }
        out
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "element {i}: {x} vs {y}"
            );
        }
    }

    #[test]
    fn conv2d_matches_the_reference_for_every_parameter_kind() {
        let cases = [
            (1, 3, 8, 9, 4, [3, 3], [1, 1], [0, 0, 0, 0], [1, 1], 1),
            (2, 4, 7, 7, 6, [3, 2], [2, 1], [1, 0, 2, 1], [1, 1], 2),
            (1, 2, 9, 9, 2, [3, 3], [1, 2], [2, 2, 2, 2], [2, 2], 1),
            (2, 5, 6, 6, 5, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 5), // depthwise
            // Depthwise with stride 2, TensorFlow's uneven "same" padding, a 5×5 window, and
            // dilation, as EfficientNet and Xception have them.
            (1, 4, 11, 10, 4, [3, 3], [2, 2], [0, 0, 1, 1], [1, 1], 4),
            (2, 3, 9, 12, 3, [5, 5], [2, 1], [1, 2, 2, 1], [1, 1], 3),
            (1, 2, 10, 10, 2, [3, 3], [1, 2], [2, 2, 2, 2], [2, 2], 2),
            // Ten output rows and 100 columns: register blocks of 4 × 16 plus leftover rows
            // and columns.
            (1, 3, 12, 12, 10, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1),
            // Depthwise rows of 37: two 16-wide register blocks and a tail; the same with
            // stride 2 (column phases) and a 5×5 window.
            (2, 3, 7, 37, 3, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 3),
            (1, 2, 9, 70, 2, [3, 3], [2, 2], [0, 0, 1, 1], [1, 1], 2),
            (1, 2, 9, 75, 2, [5, 5], [1, 2], [2, 2, 2, 2], [1, 1], 2),
            // 1×1 convolutions, which multiply the input in place, with one and two groups.
            (2, 6, 5, 7, 4, [1, 1], [1, 1], [0, 0, 0, 0], [1, 1], 1),
            (1, 6, 5, 7, 4, [1, 1], [1, 1], [0, 0, 0, 0], [1, 1], 2),
            // A first layer: three channels at stride 2 through im2col, an odd width (the
            // last pair of a row is half outside the plane) and TensorFlow's "same" padding.
            (1, 3, 10, 11, 8, [3, 3], [2, 2], [0, 0, 1, 1], [1, 1], 1),
            // Strided products whose output views are one row or one column wide: a single
            // output channel, one output channel per group, and a 1×1 output plane.
            (1, 3, 9, 9, 1, [3, 3], [2, 2], [0, 0, 1, 1], [1, 1], 1),
            (1, 4, 9, 9, 2, [3, 3], [2, 2], [1, 1, 1, 1], [1, 1], 2),
            (1, 3, 3, 3, 2, [3, 3], [2, 2], [0, 0, 0, 0], [1, 1], 1),
        ];
        for (n, cin, h, w, cout, kernel, stride, padding, dilation, groups) in cases {
            let p = Conv2dParams {
                kernel,
                stride,
                padding,
                dilation,
                groups,
            };
            let x = Array::from_shape_vec((n, cin, h, w), rand(n * cin * h * w, 1)).unwrap();
            let k = cin / groups * kernel[0] * kernel[1];
            let mut wv = rand(cout * k, 2);
            let bias = rand(cout, 3);
            let want = conv_reference(&x, &wv, &bias, cout, &p);
            let dense = Matrix::Dense {
                data: wv.clone().into(),
                rows: cout,
                cols: k,
            };
            // Scratch that holds NaNs, as a buffer left by another layer may: im2col and the
            // padded bands write every value they read.
            scratch::with_len(1 << 16, |v| v.fill(f32::NAN));
            close(
                conv2d(x.view(), &dense, Some(&bias), &p)
                    .as_slice()
                    .unwrap(),
                want.as_slice().unwrap(),
                1e-5,
            );
            // Sparse weights: same answer through the CSR kernel.
            scratch::with_len(1 << 16, |v| v.fill(f32::NAN));
            for (i, v) in wv.iter_mut().enumerate() {
                if i % 3 != 0 {
                    *v = 0.0;
                }
            }
            let want = conv_reference(&x, &wv, &bias, cout, &p);
            let sparse = Matrix::Sparse(Csr::from_dense(&wv, cout, k));
            close(
                conv2d(x.view(), &sparse, Some(&bias), &p)
                    .as_slice()
                    .unwrap(),
                want.as_slice().unwrap(),
                1e-5,
            );
        }
    }

    #[test]
    fn dense_dense_and_sparse_match_the_reference() {
        // Batches of 3 and 6 take the two sparse paths (per row, and via Xᵀ).
        for n in [3, 6] {
            dense_case(n);
        }
    }

    fn dense_case(n: usize) {
        let (i, o) = (17, 5);
        let x = Array2::from_shape_vec((n, i), rand(n * i, 4)).unwrap();
        let mut w = rand(o * i, 5);
        w.iter_mut().step_by(2).for_each(|v| *v = 0.0);
        let b = rand(o, 6);
        let mut want = Array2::<f32>::zeros((n, o));
        for r in 0..n {
            for c in 0..o {
                want[[r, c]] = b[c] + (0..i).map(|k| x[[r, k]] * w[c * i + k]).sum::<f32>();
            }
        }
        for m in [
            Matrix::Dense {
                data: w.clone().into(),
                rows: o,
                cols: i,
            },
            Matrix::Sparse(Csr::from_dense(&w, o, i)),
        ] {
            close(
                dense(x.view(), &m, Some(&b)).as_slice().unwrap(),
                want.as_slice().unwrap(),
                1e-5,
            );
        }
    }

    #[test]
    fn every_kernel_gives_the_same_bits_on_one_thread_and_two() {
        // Sizes well past the split threshold, so the two-thread runs do split; rows that are
        // not a multiple of any block, and a batch for each product path.
        let (rows, cols) = (70, 2100);
        let mut w = rand(rows * cols, 21);
        let dense = Matrix::Dense {
            data: w.clone().into(),
            rows,
            cols,
        };
        w.iter_mut()
            .enumerate()
            .filter(|(i, _)| i % 5 != 0)
            .for_each(|(_, v)| *v = 0.0);
        let sparse = Matrix::Sparse(Csr::from_dense(&w, rows, cols));
        let run = |threads: usize, f: &(dyn Fn() -> Vec<Array2<f32>> + Sync)| {
            super::super::parallel::Threads::new(threads).run(usize::MAX, f)
        };
        for n in [1, 2, 5, 40] {
            let x = Array2::from_shape_vec((n, cols), rand(n * cols, 22)).unwrap();
            let xt = x.t().as_standard_layout().into_owned();
            // One row or column takes gemm's matrix-vector path unless the kernel avoids it.
            let products = || {
                [&dense, &sparse]
                    .iter()
                    .flat_map(|m| [m.mul_transposed(x.view()), m.mul_rows(0, rows, xt.view())])
                    .collect::<Vec<_>>()
            };
            let one = run(1, &products);
            let two = run(2, &products);
            for (a, b) in one.iter().zip(&two) {
                let bits = |m: &Array2<f32>| m.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(a), bits(b), "batch {n}");
            }
        }
    }

    #[test]
    fn a_product_of_factors_multiplies_like_its_matrix() {
        // W = A · B · C (5×3 · 3×2 · 2×7), against W formed explicitly.
        let (a, b, c) = (rand(15, 11), rand(6, 12), rand(14, 13));
        let mut w = vec![0.0f32; 35];
        for r in 0..5 {
            for k in 0..7 {
                for j in 0..3 {
                    for l in 0..2 {
                        w[r * 7 + k] += a[r * 3 + j] * b[j * 2 + l] * c[l * 7 + k];
                    }
                }
            }
        }
        let product = Matrix::Product(vec![
            Matrix::dense(a, 5, 3),
            Matrix::dense(b, 3, 2),
            Matrix::dense(c, 2, 7),
        ]);
        let full = Matrix::dense(w.clone(), 5, 7);
        assert_eq!((product.rows(), product.cols()), (5, 7));
        for n in [1, 3, 40] {
            let x = Array2::from_shape_vec((n, 7), rand(7 * n, 14)).unwrap();
            close(
                product.mul_transposed(x.view()).as_slice().unwrap(),
                full.mul_transposed(x.view()).as_slice().unwrap(),
                1e-5,
            );
            let rhs = x.t().as_standard_layout().into_owned();
            close(
                product.mul_rows(1, 4, rhs.view()).as_slice().unwrap(),
                full.mul_rows(1, 4, rhs.view()).as_slice().unwrap(),
                1e-5,
            );
        }
        let Matrix::Dense { data, .. } = product.clone().into_dense() else {
            panic!("dense")
        };
        close(&data, &w, 1e-5);
        let mut scaled = product;
        scaled.scale_rows(&[1.0, 2.0, 0.0, -1.0, 0.5]);
        let Matrix::Dense { data, .. } = scaled.into_dense() else {
            panic!("dense")
        };
        close(
            &data[7..14],
            &w[7..14].iter().map(|v| 2.0 * v).collect::<Vec<_>>(),
            1e-5,
        );
        assert!(data[14..21].iter().all(|v| *v == 0.0));
    }

    #[test]
    fn convolutions_and_pooling_give_the_same_bits_on_one_thread_and_two() {
        // Large enough to split: a 3×3 convolution, a 1×1 one, a depthwise one and a 3×3/2 max
        // pooling over 64 channels of 40 × 40.
        let (c, h, w) = (64, 40, 40);
        let x = Array::from_shape_vec((1, c, h, w), rand(c * h * w, 31)).unwrap();
        let conv = |kernel: [usize; 2], groups: usize| Conv2dParams {
            kernel,
            stride: [1, 1],
            padding: if kernel == [3, 3] { [1; 4] } else { [0; 4] },
            dilation: [1, 1],
            groups,
        };
        let weights = |k: usize| Matrix::Dense {
            data: rand(c * k, 32).into(),
            rows: c,
            cols: k,
        };
        let (full, pointwise, depthwise) = (weights(c * 9), weights(c), weights(9));
        let projection = Matrix::dense(rand(24 * c, 33), 24, c);
        let pool = PoolParams {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [0, 0, 1, 1],
        };
        let layers = || {
            vec![
                conv2d(x.view(), &full, None, &conv([3, 3], 1)),
                conv2d(x.view(), &pointwise, None, &conv([1, 1], 1)),
                // Too few rows to split by rows: split by columns.
                conv2d(x.view(), &projection, None, &conv([1, 1], 1)),
                conv2d(x.view(), &depthwise, None, &conv([3, 3], c)),
                pool2d(x.view(), &pool, true),
            ]
        };
        let one = super::super::parallel::Threads::new(1).run(usize::MAX, layers);
        let two = super::super::parallel::Threads::new(2).run(usize::MAX, layers);
        for (a, b) in one.iter().zip(&two) {
            let bits = |m: &Array4<f32>| m.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(a), bits(b));
        }
    }

    #[test]
    fn banded_convolutions_give_the_bits_of_one_whole_product() {
        // 64 channels of 300 columns: more than a band (shifted) or a tile (im2col) of rows,
        // so the output comes in several; 40 rows of weights, packed.
        // At stride 2, im2col tiles: 35 output rows of 300 columns, a tile each, which two
        // threads share.
        for (stride, padding, dilation, h) in [
            ([1, 1], [1; 4], [1, 1], 30),
            ([1, 1], [2, 1, 3, 2], [2, 1], 30),
            ([1, 1], [1; 4], [1, 1], 70),
            ([2, 2], [0, 0, 1, 1], [1, 1], 70),
        ] {
            let (cin, cout, w) = (64, 40, 300);
            let x = Array::from_shape_vec((1, cin, h, w), rand(cin * h * w, 61)).unwrap();
            let p = Conv2dParams {
                kernel: [3, 3],
                stride,
                padding,
                dilation,
                groups: 1,
            };
            let k = cin * 9;
            assert!(4 * k * w > IM2COL_TILE_BYTES && 4 * cin * w * h > SHIFTED_BAND_BYTES);
            let weights = rand(cout * k, 62);
            let m = Matrix::dense(weights.clone(), cout, k);
            // 70 rows are more than four bands: two threads take whole bands each.
            let banded = super::super::parallel::Threads::new(2)
                .run(usize::MAX, || conv2d(x.view(), &m, None, &p));
            let (oh, ow) = p.output_size(h, w).unwrap();
            let mut whole = vec![0f32; k * oh * ow];
            im2col(x.view(), 0, 0, cin, &p, 0..oh, ow, &mut whole);
            let mut want = vec![0f32; cout * oh * ow];
            let n = oh * ow;
            // Shifted rows or im2col tiles on AVX-512 (one chain per element, as the kernel's
            // product); else im2col tiles through the `gemm` crate (see `conv2d_into`).
            if kernels::own_kernel_available() {
                kernels::product(&mut want, &weights, k, &whole, n);
            } else {
                kernels::gemm_crate_product_strided(&mut want, n, cout, &weights, k, &whole, n);
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(banded.as_slice().unwrap()), bits(&want));
        }
    }

    #[test]
    fn activations_in_the_product_registers_give_the_bits_of_a_separate_pass() {
        // 1×1 convolutions packed (40 rows) and in place (5), deeper than a depth block (300),
        // and a stride-1 3×3 one (shifted rows); inputs scaled so that ReLU6 clips both ends.
        for (cin, cout, k) in [(300, 40, 1), (300, 5, 1), (30, 40, 3)] {
            let x = Array::from_shape_vec((1, cin, 7, 9), rand(cin * 63, 54)).unwrap() * 10.0;
            let bias = rand(cout, 55);
            let p = Conv2dParams {
                kernel: [k, k],
                stride: [1, 1],
                padding: [k / 2; 4],
                dilation: [1, 1],
                groups: 1,
            };
            let w = Matrix::dense(rand(cout * cin * k * k, 56), cout, cin * k * k);
            for (act, f) in [
                (Activation::None, (|v: f32| v) as fn(f32) -> f32),
                (Activation::Relu, |v: f32| v.max(0.0)),
                (Activation::Relu6, |v: f32| v.clamp(0.0, 6.0)),
            ] {
                let separate = conv2d(x.view(), &w, None, &p);
                let bias_added =
                    &separate + &Array::from_shape_vec((1, cout, 1, 1), bias.clone()).unwrap();
                let separate = bias_added.mapv(f);
                let fused = conv2d_activated(x.view(), &w, Some(&bias), &p, act);
                assert!(separate.iter().any(|&v| v >= 6.0));
                let bits = |a: &Array4<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&separate),
                    bits(&fused),
                    "{cin}→{cout} {k}×{k}, {act:?}"
                );
            }
        }
    }

    #[test]
    fn a_fused_activation_gives_the_bits_of_a_separate_pass() {
        let x = Array::from_shape_vec((2, 4, 9, 9), rand(2 * 4 * 81, 51)).unwrap();
        let bias = rand(4, 52);
        for (groups, k) in [(1, 4 * 9), (4, 9)] {
            let p = Conv2dParams {
                kernel: [3, 3],
                stride: [1, 1],
                padding: [1; 4],
                dilation: [1, 1],
                groups,
            };
            let w = Matrix::dense(rand(4 * k, 53), 4, k);
            for (act, f) in [
                (Activation::Relu, (|v: f32| v.max(0.0)) as fn(f32) -> f32),
                (Activation::Relu6, |v: f32| v.clamp(0.0, 6.0)),
            ] {
                let separate = conv2d(x.view(), &w, Some(&bias), &p).mapv(f);
                let fused = conv2d_activated(x.view(), &w, Some(&bias), &p, act);
                let bits = |a: &Array4<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&separate), bits(&fused), "groups {groups}, {act:?}");
            }
        }
    }

    #[test]
    fn two_pass_max_pooling_equals_whole_windows() {
        // 40 rows as well as 9: taller planes, more output rows.
        for (h, w) in [(9, 11), (40, 13)] {
            let x = rand(h * w, 21);
            for (kernel, stride, padding) in [
                ([3, 3], [2, 2], [1, 1, 1, 1]),
                ([3, 3], [2, 2], [0, 0, 1, 1]),
                ([2, 2], [2, 2], [0; 4]),
                ([3, 2], [1, 1], [0, 1, 2, 0]),
                ([1, 1], [2, 3], [0; 4]),
                ([5, 5], [3, 3], [2, 2, 2, 2]),
                ([3, 3], [1, 1], [1, 1, 1, 1]),
                ([3, 3], [2, 2], [0; 4]),
                ([2, 4], [1, 2], [0, 3, 0, 0]),
            ] {
                let p = PoolParams {
                    kernel,
                    stride,
                    padding,
                };
                let (oh, ow) = p.output_size(h, w).unwrap();
                let mut whole = vec![f32::NAN; oh * ow];
                let mut two_pass = vec![f32::NAN; oh * ow];
                pool_plane::<true>(&x, &mut whole, (h, w), (oh, ow), &p);
                let cols: Vec<_> = column_spans(w, ow, &p).collect();
                max_pool_plane(
                    &x,
                    &mut two_pass,
                    (h, w),
                    &cols,
                    &p,
                    (&mut Vec::new(), &mut Vec::new()),
                );
                assert_eq!(whole, two_pass, "{h}×{w} {p:?}");
            }
        }
    }

    #[test]
    fn max_pooling_at_stride_2_equals_whole_windows_on_every_path() {
        // Xception's planes (9 to 72 wide), one pixel, and rows past two vectors of outputs;
        // a NaN in each plane, which `max` skips.
        for (h, w) in [
            (9, 9),
            (18, 18),
            (36, 36),
            (72, 72),
            (1, 1),
            (2, 5),
            (40, 70),
        ] {
            let mut x = rand(3 * h * w, 22);
            for plane in x.chunks_exact_mut(h * w) {
                plane[(h * w) / 2] = f32::NAN;
            }
            for (kernel, padding) in [
                ([3, 3], [0, 0, 1, 1]),
                ([3, 3], [1, 1, 1, 1]),
                ([2, 2], [0; 4]),
                ([3, 2], [2, 1, 0, 0]),
            ] {
                let p = PoolParams {
                    kernel,
                    stride: [2, 2],
                    padding,
                };
                let Some((oh, ow)) = p.output_size(h, w) else {
                    continue;
                };
                let mut whole = vec![f32::NAN; 3 * oh * ow];
                for (plane, out) in x.chunks_exact(h * w).zip(whole.chunks_exact_mut(oh * ow)) {
                    pool_plane::<true>(plane, out, (h, w), (oh, ow), &p);
                }
                let input = ArrayView4::from_shape((1, 3, h, w), &x).unwrap();
                let pooled = pool2d(input, &p, true);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                let label = format!("{h}×{w} {p:?}");
                assert_eq!(bits(&whole), bits(pooled.as_slice().unwrap()), "{label}");
            }
        }
    }

    #[test]
    fn pooling_matches_the_reference() {
        let x = Array::from_shape_vec((1, 2, 5, 5), rand(50, 7)).unwrap();
        let p = PoolParams {
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0, 0, 1, 1],
        };
        let mx = pool2d(x.view(), &p, true);
        let av = pool2d(x.view(), &p, false);
        assert_eq!(mx.dim(), (1, 2, 3, 3));
        for c in 0..2 {
            for oy in 0..3 {
                for ox in 0..3 {
                    let vals: Vec<f32> = (oy * 2..(oy * 2 + 2).min(5))
                        .flat_map(|y| (ox * 2..(ox * 2 + 2).min(5)).map(move |xx| (y, xx)))
                        .map(|(y, xx)| x[[0, c, y, xx]])
                        .collect();
                    assert_eq!(
                        mx[[0, c, oy, ox]],
                        vals.iter().cloned().fold(f32::MIN, f32::max)
                    );
                    assert!(
                        (av[[0, c, oy, ox]] - vals.iter().sum::<f32>() / vals.len() as f32).abs()
                            < 1e-6
                    );
                }
            }
        }
        // Unpadded 2×2/2 pooling (its own fast path) on odd sizes: the last row and column are
        // dropped, every window is whole.
        let x7 = Array::from_shape_vec((2, 1, 7, 5), rand(70, 8)).unwrap();
        let unpadded = PoolParams {
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0; 4],
        };
        let (mx, av) = (
            pool2d(x7.view(), &unpadded, true),
            pool2d(x7.view(), &unpadded, false),
        );
        assert_eq!(mx.dim(), (2, 1, 3, 2));
        for ((b, _, oy, ox), &m) in mx.indexed_iter() {
            let vals = [(0, 0), (0, 1), (1, 0), (1, 1)]
                .map(|(dy, dx)| x7[[b, 0, 2 * oy + dy, 2 * ox + dx]]);
            assert_eq!(m, vals.iter().cloned().fold(f32::MIN, f32::max));
            assert_eq!(
                av[[b, 0, oy, ox]],
                (vals[0] + vals[1] + vals[2] + vals[3]) / 4.0
            );
        }
        let g = global_avg_pool(x.view());
        assert!((g[[0, 1]] - x.slice(s![0, 1, .., ..]).sum() / 25.0).abs() < 1e-6);
        let mut l = Array2::from_shape_vec((1, 3), vec![1.0, 2.0, 3.0]).unwrap();
        softmax(&mut l);
        assert!((l.sum() - 1.0).abs() < 1e-6 && l[[0, 2]] > l[[0, 1]]);
    }
}
