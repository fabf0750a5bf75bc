//! Stride-1 3×3 convolutions by Winograd's minimal filtering, F(4×4, 3×3) (Lavin and Gray,
//! "Fast Algorithms for Convolutional Neural Networks", CVPR 2016).
//!
//! The output is cut into 4×4 tiles, each computed from the 6×6 patch of input around it. In
//! the transformed domain a tile's 3×3 correlation becomes 36 independent elementwise
//! products, `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`; summed over the input channels, each of the 36
//! positions is one matrix product `M_p = U_p · V_p`, `U_p` the transformed weights
//! (`cout × cin`, made once at load, [`WinogradWeights`]) and `V_p` the transformed input
//! (`cin × tiles`). The products take 36 multiply-adds per 16 outputs and input channel where
//! the direct convolution takes 144: 4× fewer. They run on the dense product
//! ([`kernels::product`]); the transforms are additions and small multiples (`avx512`,
//! sixteen tiles to a vector; `avx2`, eight).
//!
//! The results are not the direct convolution's bits: the transforms round differently, and
//! their constants (up to 8 and 1/24) grow the error with the tile. Against the f64 reference
//! it measured 1–2.2e-6 of the sum of the terms' magnitudes, where the direct product's is
//! about 1e-7; the tests bound it at 1e-5. Each output's arithmetic is fixed by
//! its tile and the weights, never by how the tiles or the channels are split over threads,
//! so every thread count gives the same bits.
//!
//! Memory: the transformed weights take 36/9 = 4× the 3×3 weights. The dense weights stay
//! beside them for the other paths ([`crate::ops::Matrix::Winograd`]); read from the map they
//! are released and cost nothing, but where they are the model's own copy (a folded batch
//! norm) the layer holds 5× its 3×3 weights. Each thread's transformed input and products
//! for a band (2 MB, or a quarter of the transformed weights where those are larger) come
//! from its scratch pool, outside the activations' budget.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod columns;

use crate::kernels::{self, Epilogue};
use crate::ops::Conv2dParams;
use crate::{parallel, scratch};
use ndarray::{ArrayViewMut2, Axis, s};

/// The output tile's side.
const TILE: usize = 4;
/// The input patch's side: the tile plus the window's reach.
const ALPHA: usize = TILE + 2;
/// Products per tile and channel pair in the transformed domain.
const POSITIONS: usize = ALPHA * ALPHA;
/// The most bytes of transformed input and products a band of tile rows takes (for each
/// thread), unless the weights are large ([`conv`]): both are read back from cache by the
/// products and the output transform.
const BAND_BYTES: usize = 2 << 20;
/// The fewest bands that the threads split between them (each band's input transformed by
/// the thread that computes it); with fewer, one thread transforms each band and the threads
/// split its output channels.
const SPLIT_BANDS: usize = 4;
/// Transformed weights this small (a Zen 3 core's L2) are read from cache by every band.
const SMALL_WEIGHT_BYTES: usize = 512 << 10;

/// `G g Gᵀ` for one 3×3 window `g` (row-major), in f64 and rounded once.
fn transform_window(g: &[f32]) -> [f32; POSITIONS] {
    let g: [f64; 9] = std::array::from_fn(|i| f64::from(g[i]));
    // G times each column of the window, then each row of that times Gᵀ.
    let columns: [[f64; ALPHA]; 3] = std::array::from_fn(|kx| taps(g[kx], g[3 + kx], g[6 + kx]));
    let rows: [[f64; ALPHA]; ALPHA] =
        std::array::from_fn(|i| taps(columns[0][i], columns[1][i], columns[2][i]));
    std::array::from_fn(|p| rows[p / ALPHA][p % ALPHA] as f32)
}

/// `G · (a, b, c)`: the six transformed taps of a 3-tap filter.
fn taps(a: f64, b: f64, c: f64) -> [f64; ALPHA] {
    let (outer, inner) = (a + c, b);
    [
        a / 4.0,
        -(outer + inner) / 6.0,
        -(outer - inner) / 6.0,
        a / 24.0 + b / 12.0 + c / 6.0,
        a / 24.0 - b / 12.0 + c / 6.0,
        c,
    ]
}

/// A 3×3 convolution's weights in the transformed domain: `U_p = (G g Gᵀ)_p` for each of the
/// 36 positions `p`, each a row-major `rows × cols` matrix (output by input channels).
#[derive(Debug, Clone)]
pub struct WinogradWeights {
    domain: Vec<f32>,
    rows: usize,
    cols: usize,
}

impl WinogradWeights {
    /// Transforms `weights`, row-major `[rows, cols·9]` (each input channel's 3×3 window
    /// row-major), in f64 and rounded once. `None` where the memory cannot be had.
    pub fn transform(weights: &[f32], rows: usize, cols: usize) -> Option<WinogradWeights> {
        let per_position = rows.checked_mul(cols)?;
        assert!(
            weights.len() >= per_position * 9,
            "a 3×3 window per channel pair"
        );
        let mut domain = Vec::new();
        domain
            .try_reserve_exact(per_position.checked_mul(POSITIONS)?)
            .ok()?;
        domain.resize(per_position * POSITIONS, 0.0);
        // A block of channel pairs at a time, each position's run then copied whole: stores
        // 36 positions apart (a quarter of the transform's size) took half of VGG16's load.
        const BLOCK: usize = 512;
        let mut block = [[0.0f32; BLOCK]; POSITIONS];
        for first in (0..per_position).step_by(BLOCK) {
            let count = BLOCK.min(per_position - first);
            let windows = weights[first * 9..(first + count) * 9].chunks_exact(9);
            for (k, g) in windows.enumerate() {
                for (p, u) in transform_window(g).into_iter().enumerate() {
                    block[p][k] = u;
                }
            }
            for (p, run) in block.iter().enumerate() {
                let at = p * per_position + first;
                domain[at..at + count].copy_from_slice(&run[..count]);
            }
        }
        Some(WinogradWeights { domain, rows, cols })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn bytes(&self) -> u64 {
        4 * self.domain.len() as u64
    }

    /// Multiplies output row `r` by `scale[r]`: the transform is linear, so this is the
    /// transform of the scaled weights (up to rounding).
    pub fn scale_rows(&mut self, scale: &[f32]) {
        for position in self.domain.chunks_exact_mut((self.rows * self.cols).max(1)) {
            for (row, s) in position.chunks_exact_mut(self.cols.max(1)).zip(scale) {
                row.iter_mut().for_each(|v| *v *= s);
            }
        }
    }

    /// `U_p`, rows `rows`.
    fn position(&self, p: usize, rows: std::ops::Range<usize>) -> &[f32] {
        let at = p * self.rows * self.cols;
        &self.domain[at + rows.start * self.cols..at + rows.end * self.cols]
    }
}

/// Whether a convolution runs here: a 3×3 window at stride 1, undilated and ungrouped, on a
/// CPU with the AVX-512 kernels, with enough channels that the products outweigh the
/// transforms.
pub fn suits(p: &Conv2dParams, cin: usize, cout: usize) -> bool {
    p.kernel == [3, 3]
        && p.stride == [1, 1]
        && p.dilation == [1, 1]
        && p.groups == 1
        && cin >= 8
        && cout >= 16
        && available()
}

/// Whether this CPU runs the transforms: beside the runtime's own product, AVX-512F's
/// (`avx512`) or AVX2's (`avx2`).
pub fn available() -> bool {
    kernels::own_kernel().is_some()
}

/// One image's convolution: `image` holds `cin` planes `h × w`, `out` the `cout` output
/// planes `oh × ow` (every value written), then the epilogue.
///
/// Panics where [`available`] is false, or the shapes disagree.
pub(crate) fn conv(
    image: &[f32],
    (h, w): (usize, usize),
    weights: &WinogradWeights,
    p: &Conv2dParams,
    (oh, ow): (usize, usize),
    epilogue: Epilogue<'_>,
    out: &mut [f32],
) {
    assert!(available(), "the own kernels' instruction sets");
    let (cin, cout) = (weights.cols, weights.rows);
    assert_eq!(image.len(), cin * h * w, "cin planes h × w");
    assert_eq!(out.len(), cout * oh * ow, "cout planes oh × ow");
    let (tiles_y, tiles_x) = (oh.div_ceil(TILE), ow.div_ceil(TILE));
    // Columns `4t..4t + 6` of tile `t`, read sixteen tiles at a time, plus the first pass's
    // whole vectors.
    let width = TILE * tiles_x.next_multiple_of(16) + 16;
    let plan = Plan {
        image,
        input: (cin, h, w),
        origin: (p.padding[0], p.padding[1]),
        output: (oh, ow),
        tiles: (tiles_y, tiles_x),
        width,
    };
    // Each band reads all 36 transformed weight matrices again, so layers with large weights
    // take larger bands (VGG16's 512-channel layers at 28×28: one band of 7 MB ran 13.6 ms,
    // two of 4 MB 16.7 ms) and the rest small ones, whose transforms stay in cache (its
    // 64-channel layer at 224×224: 19.1 ms in 2 MB bands, 22.1 in 4 MB ones).
    let band_bytes = BAND_BYTES.max(weights.bytes() as usize / 4);
    let row_bytes = 4 * POSITIONS * (cin + cout) * tiles_x;
    let mut bands = tiles_y.div_ceil((band_bytes / row_bytes.max(1)).max(1));
    // Small weights stay in L2 however often the bands read them: such a layer takes at least
    // `SPLIT_BANDS` bands, so that the threads split it by bands, each transforming its own
    // input, instead of one thread transforming every band for all of them.
    if weights.bytes() as usize <= SMALL_WEIGHT_BYTES && tiles_y >= SPLIT_BANDS {
        bands = bands.max(SPLIT_BANDS);
    }
    let band = tiles_y.div_ceil(bands.max(1)).max(1);
    let view = ArrayViewMut2::from_shape((cout, oh * ow), out).expect("cout × plane");
    let tile_row = TILE * ow;
    if tiles_y.div_ceil(band) >= SPLIT_BANDS {
        // Enough bands to go round: each thread transforms its own bands' input and computes
        // every channel of them.
        // Multiply-adds per output pixel: 36 per tile of 16, input and output channel.
        let work = POSITIONS * cin * cout / (TILE * TILE);
        parallel::split(view, Axis(1), tile_row, work, &|first, mut part| {
            let ty_first = first / tile_row;
            let ty_end = ty_first + part.ncols().div_ceil(tile_row);
            for ty0 in (ty_first..ty_end).step_by(band) {
                let tile_rows = ty0..(ty0 + band).min(ty_end);
                let columns = (ty0 - ty_first) * tile_row
                    ..part.ncols().min((tile_rows.end - ty_first) * tile_row);
                let strip = part.slice_mut(s![.., columns]);
                plan.band(tile_rows, weights, strip, epilogue);
            }
        });
    } else {
        // Few bands: each is transformed once, and its output channels split over the
        // threads.
        let mut view = view;
        for ty0 in (0..tiles_y).step_by(band) {
            let tile_rows = ty0..(ty0 + band).min(tiles_y);
            let columns = ty0 * tile_row..(tile_rows.end * tile_row).min(oh * ow);
            let strip = view.slice_mut(s![.., columns]);
            let tiles = tile_rows.len() * tiles_x;
            scratch::with_len(POSITIONS * cin * tiles, |v| {
                plan.transform_input(tile_rows.clone(), v);
                let work = POSITIONS * cin * tiles;
                parallel::split(strip, Axis(0), 16, work, &|first, part| {
                    plan.multiply_and_finish(v, tiles, weights, first, part, epilogue);
                });
            });
        }
    }
}

/// One image's geometry.
struct Plan<'a> {
    image: &'a [f32],
    /// Channels, height, width.
    input: (usize, usize, usize),
    /// The padding above and to the left: input row of output row 0, column of column 0.
    origin: (usize, usize),
    output: (usize, usize),
    /// Tile rows and tiles per row.
    tiles: (usize, usize),
    /// The padded rows' stride in the input transform's buffers.
    width: usize,
}

impl Plan<'_> {
    /// Tile rows `tile_rows`, every output channel, into `out` (the rows' columns of every
    /// output plane).
    fn band(
        &self,
        tile_rows: std::ops::Range<usize>,
        weights: &WinogradWeights,
        out: ArrayViewMut2<'_, f32>,
        epilogue: Epilogue<'_>,
    ) {
        let tiles = tile_rows.len() * self.tiles.1;
        scratch::with_len(POSITIONS * self.input.0 * tiles, |v| {
            self.transform_input(tile_rows, v);
            self.multiply_and_finish(v, tiles, weights, 0, out, epilogue);
        });
    }

    /// The transformed input of tile rows `tile_rows` into `v`, `[36][cin][tiles]`, the tiles
    /// row by row.
    fn transform_input(&self, tile_rows: std::ops::Range<usize>, v: &mut [f32]) {
        let (cin, h, w) = self.input;
        let (top, left) = self.origin;
        let tiles_x = self.tiles.1;
        let tiles = tile_rows.len() * tiles_x;
        let width = self.width;
        assert!(
            v.len() >= POSITIONS * cin * tiles,
            "a band's transformed input"
        );
        scratch::with_zeros(ALPHA * width, |rows| {
            scratch::with_len(ALPHA * width, |columns| {
                for c in 0..cin {
                    let plane = &self.image[c * h * w..(c + 1) * h * w];
                    for (row_index, ty) in tile_rows.clone().enumerate() {
                        // The six input rows of the tile row, zero outside the image; the
                        // columns outside it are never written, so stay zero.
                        for (i, row) in rows.chunks_exact_mut(width).enumerate() {
                            let y = (TILE * ty + i).checked_sub(top).filter(|&y| y < h);
                            match y {
                                Some(y) => {
                                    row[left..left + w].copy_from_slice(&plane[y * w..(y + 1) * w])
                                }
                                None => row.fill(0.0),
                            }
                        }
                        let at = c * tiles + row_index * tiles_x;
                        // SAFETY: the CPU has the own kernel's instruction set (`available`,
                        // asserted by `conv`); `rows` and `columns` hold six rows of
                        // `width`, which `conv` sized for `tiles_x` (enough for sixteen
                        // lanes, so for eight); position `p` of tile `t` is written at
                        // `at + p·cin·tiles + t < 36·cin·tiles` (asserted above).
                        #[cfg(target_arch = "x86_64")]
                        unsafe {
                            let v = v.as_mut_ptr().add(at);
                            let stride = cin * tiles;
                            match kernels::own_kernel() {
                                Some(kernels::OwnKernel::Avx2) => {
                                    avx2::input_row(rows, columns, width, tiles_x, v, stride)
                                }
                                _ => avx512::input_row(rows, columns, width, tiles_x, v, stride),
                            }
                        }
                        #[cfg(not(target_arch = "x86_64"))]
                        let _ = at;
                    }
                }
            })
        })
    }

    /// The output channels `first..first + out.nrows()` of the band whose transformed input is
    /// `v` (`tiles` of them): the 36 products for those channels, then the output transform
    /// into `out`, the band's columns of each channel's plane.
    fn multiply_and_finish(
        &self,
        v: &[f32],
        tiles: usize,
        weights: &WinogradWeights,
        first: usize,
        mut out: ArrayViewMut2<'_, f32>,
        epilogue: Epilogue<'_>,
    ) {
        let cin = self.input.0;
        let rows = out.nrows();
        let ow = self.output.1;
        let tiles_x = self.tiles.1;
        scratch::with_len(POSITIONS * rows * tiles, |m| {
            for (p, products) in m.chunks_exact_mut(rows * tiles).enumerate() {
                let u = weights.position(p, first..first + rows);
                let v = &v[p * cin * tiles..(p + 1) * cin * tiles];
                kernels::product(products, u, cin, v, tiles);
            }
            let band_rows = out.ncols() / ow;
            for (r, mut plane) in out.rows_mut().into_iter().enumerate() {
                let bias = epilogue.bias.map_or(0.0, |b| b[first + r]);
                let plane = plane.as_slice_mut().expect("contiguous columns of a plane");
                for ty in 0..tiles / tiles_x {
                    let output_rows = TILE.min(band_rows - TILE * ty);
                    let products = &m[r * tiles + ty * tiles_x..];
                    let row = &mut plane[TILE * ty * ow..];
                    assert!(
                        row.len() >= (output_rows - 1) * ow + ow,
                        "the tile row's rows"
                    );
                    // SAFETY: the CPU has the own kernel's instruction set; position `p` of
                    // tile `t` is at `p·rows·tiles + t` of `products`, inside `m`; the tile
                    // row's `output_rows` rows of `ow` are in `row` (asserted).
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        let target = (row.as_mut_ptr(), ow, output_rows, ow);
                        let products = products.as_ptr();
                        let stride = rows * tiles;
                        let act = epilogue.activation;
                        match kernels::own_kernel() {
                            Some(kernels::OwnKernel::Avx2) => {
                                avx2::output_row(products, stride, tiles_x, target, bias, act)
                            }
                            _ => avx512::output_row(products, stride, tiles_x, target, bias, act),
                        }
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    let _ = (products, row, bias);
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The f64 reference: `out[o][y][x] = Σ_c Σ_taps w · x` with zero padding, and the sum of
    /// the terms' magnitudes for each output.
    fn reference(
        (x, (cin, h, w), weights, cout): (&[f32], (usize, usize, usize), &[f32], usize),
        p: &Conv2dParams,
        bias: &[f32],
    ) -> (Vec<f64>, Vec<f64>, (usize, usize)) {
        let (oh, ow) = p.output_size(h, w).unwrap();
        let (mut out, mut magnitude) = (vec![0.0; cout * oh * ow], vec![0.0; cout * oh * ow]);
        for o in 0..cout {
            for y in 0..oh {
                for xx in 0..ow {
                    let (mut sum, mut size) = (f64::from(bias[o]), f64::from(bias[o]).abs());
                    for c in 0..cin {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let iy = (y + ky).checked_sub(p.padding[0]).filter(|&v| v < h);
                                let ix = (xx + kx).checked_sub(p.padding[1]).filter(|&v| v < w);
                                if let (Some(iy), Some(ix)) = (iy, ix) {
                                    let term = f64::from(weights[(o * cin + c) * 9 + ky * 3 + kx])
                                        * f64::from(x[(c * h + iy) * w + ix]);
                                    sum += term;
                                    size += term.abs();
                                }
                            }
                        }
                    }
                    out[(o * oh + y) * ow + xx] = sum;
                    magnitude[(o * oh + y) * ow + xx] = size;
                }
            }
        }
        (out, magnitude, (oh, ow))
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn params(padding: usize) -> Conv2dParams {
        Conv2dParams {
            kernel: [3, 3],
            stride: [1, 1],
            padding: [padding; 4],
            dilation: [1, 1],
            groups: 1,
        }
    }

    /// A layer's operands: input planes, weights, bias.
    struct Layer {
        x: Vec<f32>,
        input: (usize, usize, usize),
        weights: Vec<f32>,
        cout: usize,
        p: Conv2dParams,
        bias: Vec<f32>,
    }

    impl Layer {
        fn new(
            (cin, cout, h, w): (usize, usize, usize, usize),
            padding: usize,
            seed: u32,
        ) -> Layer {
            Layer {
                x: values(cin * h * w, seed),
                input: (cin, h, w),
                weights: values(cout * cin * 9, seed + 1),
                cout,
                p: params(padding),
                bias: values(cout, seed + 2),
            }
        }

        /// The layer through [`conv`] on `threads` threads.
        fn run(&self, activation: kernels::Activation, threads: usize) -> Vec<f32> {
            let (cin, h, w) = self.input;
            let (oh, ow) = self.p.output_size(h, w).unwrap();
            let domain = WinogradWeights::transform(&self.weights, self.cout, cin).unwrap();
            let mut out = vec![f32::NAN; self.cout * oh * ow];
            let epilogue = Epilogue {
                bias: Some(&self.bias),
                activation,
            };
            parallel::Threads::new(threads).run(usize::MAX, || {
                conv(
                    &self.x,
                    (h, w),
                    &domain,
                    &self.p,
                    (oh, ow),
                    epilogue,
                    &mut out,
                )
            });
            out
        }
    }

    #[test]
    fn matches_the_reference_within_the_transforms_rounding() {
        if !available() {
            return;
        }
        // Planes that are and are not multiples of the tile, narrower and wider than sixteen
        // tiles, same and valid padding.
        for (shape, pad) in [
            ((8, 16, 4, 4), 1),
            ((9, 17, 7, 5), 1),
            ((16, 24, 13, 70), 1),
            ((12, 16, 74, 9), 0),
            ((32, 48, 20, 20), 1),
        ] {
            let layer = Layer::new(shape, pad, 1);
            let (cin, h, w) = layer.input;
            let operands = (&layer.x[..], layer.input, &layer.weights[..], layer.cout);
            let (want, size, _) = reference(operands, &layer.p, &layer.bias);
            let got = layer.run(Default::default(), 1);
            let mut worst = 0.0f64;
            for ((g, w), s) in got.iter().zip(&want).zip(&size) {
                assert!(g.is_finite(), "every output written");
                worst = worst.max((f64::from(*g) - w).abs() / s.max(1e-3));
            }
            // Relative to the sum of the terms' magnitudes: measured 1.0–2.2e-6 on these
            // layers, where the direct product's rounding is about 1e-7.
            assert!(worst < 1e-5, "{cin}→{} at {h}×{w}: {worst:e}", layer.cout);
        }
    }

    #[test]
    fn bias_and_activation_and_threads_give_the_same_bits() {
        if !available() {
            return;
        }
        let layer = Layer::new((16, 40, 30, 37), 1, 4);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let plain = layer.run(Default::default(), 1);
        for activation in [kernels::Activation::Relu, kernels::Activation::Relu6] {
            let one = layer.run(activation, 1);
            assert_eq!(bits(&one), bits(&layer.run(activation, 2)));
            for (a, b) in one.iter().zip(&plain) {
                let want = match activation {
                    kernels::Activation::Relu => b.max(0.0),
                    _ => b.clamp(0.0, 6.0),
                };
                assert_eq!(a.to_bits(), want.to_bits());
            }
        }
    }
}
