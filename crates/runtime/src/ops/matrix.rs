//! Weight matrices (dense, CSR, products of factors, sign bits, channel panels, Winograd's domain)
//! and their products: the one place a layer's weights meet its input.

use super::*;

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
    /// output while the part is still in that thread's cache (`add_residual`).
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
pub(super) fn panels_product(
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
pub(super) fn add_residual(out: &mut [f32], residual: Option<&[f32]>) {
    if let Some(residual) = residual {
        kernels::add_to_row(out, residual);
    }
}

/// `out = mᵀ`, row-major.
pub(super) fn copy_transposed(m: ArrayView2<'_, f32>, out: &mut [f32]) {
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
pub(super) fn product_rows(out: &mut [f32], w: &[f32], cols: usize, rhs: &[f32], n: usize) {
    parallel::split_rows(out, n, 16, cols * n, &|first, part| {
        kernels::product(part, &w[first * cols..], cols, rhs, n)
    });
}

/// `out = w · rhs` then the epilogue, on the AVX-512 kernel ([`kernels::product_columns`]),
/// for an output view `rows × n` (rows any distance apart) and `rhs` `n` wide: split over the
/// threads by rows, or by columns where [`splits_by_columns`] says. Each element's bits are
/// the same either way.
pub(super) fn split_product(
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
pub(super) fn splits_by_columns(rows: usize, depth: usize, n: usize) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use cxrm_format::testing::uniform as rand;

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
}
