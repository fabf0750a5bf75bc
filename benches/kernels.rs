//! Kernel benchmarks, one thread unless named, each against the kernel it replaced or the one a layer would
//! otherwise take (quote them as ratios from one run):
//!
//! * `pointwise/*` and `conv3x3/*`: the dense products of a 1×1 and a 3×3 convolution at
//!   Xception's shapes, through `kernels::product` (the `gemm` crate, AVX-512 where the CPU has
//!   it) against ndarray's `general_mat_mul` (matrixmultiply, the runtime's previous path for
//!   large products) on the same operands.
//! * `conv3x3/winograd/*`: the same stride-1 layers by Winograd's F(4×4, 3×3) against
//!   `conv3x3/conv2d/*`, the direct product.
//! * `conv3x3/first_layer/*`: stride-2 first layers over an image's three channels
//!   (MobileNetV2's and Xception's), through the runtime's choice: on AVX2 the direct kernel
//!   with the output channels in the lanes, elsewhere im2col tiles (compare commits);
//!   `conv3x3/first_layer_2_threads/*` splits them as a model's pass does, inside one entry
//!   into the pool, so that it times the split and not the other worker's wake-up.
//! * `depthwise/*`: 3×3 depthwise convolutions at Xception's and MobileNetV2's shapes (9×9
//!   to 112×112, stride 1 and 2) through the kernel the runtime chooses (`runtime`), each
//!   kernel that fits the layer (`ops::depthwise_through`: `perplane`, `channelblocks`,
//!   `rows`, `flat`) and the general tap-by-tap loop (`ops::depthwise_general`, the first
//!   kernel).
//! * `max_pool/*`: 3×3/2 max pooling over Xception's four pooled planes (72×72 to 9×9) and a
//!   larger one, through the runtime (compare it with a commit before by criterion's
//!   `--save-baseline` and `--baseline`).
//! * `sparse/*`: a 728×728 pointwise product with 10–50% of its weights kept, over 25 to 324
//!   pixels, through the CSR kernel against the dense product of the same matrix (row-major,
//!   and with the output channels in the lanes, as layers of small planes take it): where the
//!   sparse path stops paying.
//! * `xnor/*`: a binary 4096→4096 dense layer at batch 1 and a 256→256 3×3 convolution at
//!   32×32, on bits (popcount) against the same layers in f32: the direct product (`f32`) and,
//!   for the convolution, Winograd's F(4×4, 3×3) (`f32_winograd`), which is what a model's f32
//!   layer of that shape runs on where the CPU has the runtime's own kernels. The layers
//!   write into an output made once, as a model's pass does, and the popcount and Winograd
//!   ones run on two threads too (`*_2_threads`), split as in a model's pass: every iteration
//!   of a measurement inside one entry into the pool, which a pass pays once for all its
//!   layers (entered per iteration, the dense layer's two threads timed the wake-up).
//! * `bwn/*`: binary weights in real-valued layers (a 4096→4096 dense layer at batch 1,
//!   LeNet-5's conv2), added and subtracted (`Matrix::Signs`) against the same weights in f32.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use cxrm::format::encoding::binary::Binary;
use cxrm::runtime::ops::{self, Conv2dParams, Csr, Matrix};
use cxrm::runtime::parallel::Threads;
use cxrm::runtime::signs::SignRows;
use cxrm::runtime::winograd::{self, WinogradWeights};
use cxrm::runtime::{kernels, xnor};
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, Array4, ArrayView2};
use std::hint::black_box;
use std::time::Instant;

fn uniform(seed: u64, n: usize) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

fn conv(kernel: usize, stride: usize, groups: usize) -> Conv2dParams {
    Conv2dParams {
        kernel: [kernel, kernel],
        stride: [stride, stride],
        padding: [kernel / 2; 4],
        dilation: [1, 1],
        groups,
    }
}

/// `w [m, k] · x [k, n]` both ways.
fn products(c: &mut Criterion, group: &str, shapes: &[(usize, usize, usize)]) {
    let mut g = c.benchmark_group(group);
    for &(m, k, n) in shapes {
        let (w, x) = (uniform(1, m * k), uniform(2, k * n));
        let label = format!("{m}x{k}x{n}");
        let mut out = vec![0f32; m * n];
        g.bench_function(BenchmarkId::new("runtime", &label), |b| {
            b.iter(|| kernels::product(&mut out, black_box(&w), k, black_box(&x), n))
        });
        if kernels::channel_panels_available() {
            // The output channels in the lanes, the weights packed as at load.
            let panels = kernels::ChannelPanels::pack(&w, m, k).unwrap();
            g.bench_function(BenchmarkId::new("channel_panels", &label), |b| {
                b.iter(|| {
                    let none = kernels::Epilogue::default();
                    kernels::channel_panels_product(&mut out, &panels, 0, black_box(&x), n, none)
                })
            });
        }
        g.bench_function(BenchmarkId::new("gemm_crate", &label), |b| {
            b.iter(|| {
                kernels::gemm_crate_product_strided(
                    &mut out,
                    n,
                    m,
                    black_box(&w),
                    k,
                    black_box(&x),
                    n,
                )
            })
        });
        let (wv, xv) = (
            ArrayView2::from_shape((m, k), &w).unwrap(),
            ArrayView2::from_shape((k, n), &x).unwrap(),
        );
        let mut out = Array2::<f32>::zeros((m, n));
        g.bench_function(BenchmarkId::new("matrixmultiply", &label), |b| {
            b.iter(|| general_mat_mul(1.0, black_box(&wv), black_box(&xv), 0.0, &mut out))
        });
    }
    g.finish();
}

fn pointwise(c: &mut Criterion) {
    // Xception 150×150: entry flow (72×72), middle flow (9×9), exit flow (5×5).
    products(
        c,
        "pointwise",
        &[
            (128, 128, 5184),
            (728, 728, 81),
            (2048, 1536, 25),
            (1536, 1024, 25),
            (1280, 320, 49),
            (728, 728, 324),
        ],
    );
}

/// A dense 3×3 convolution's weights (`cout` × `cin · 9`) with their Winograd transform, as the
/// loader gives a layer that runs by Winograd's F(4×4, 3×3).
fn with_winograd(dense: &Matrix<'static>, cout: usize, cin: usize) -> Matrix<'static> {
    let Matrix::Dense { data, .. } = dense else {
        unreachable!("dense weights")
    };
    let domain = WinogradWeights::transform(data, cout, cin).expect("memory");
    Matrix::Winograd {
        dense: Box::new(dense.clone()),
        domain: Box::new(domain),
    }
}

fn conv3x3(c: &mut Criterion) {
    // Xception's second convolution (32 → 64 channels at 72×72): im2col rows are 32·9 deep.
    products(c, "conv3x3", &[(64, 288, 5184)]);
    // Whole stride-1 convolutions through `ops::conv2d`: on AVX-512, shifted rows packed
    // straight into the kernel's panels; with `CXRM_GEMM_CRATE=1` in the environment, im2col
    // tiles through the `gemm` crate (run the bench both ways to compare).
    let mut g = c.benchmark_group("conv3x3");
    // Xception's block1_conv2 (valid padding), VGG16's block1_conv2, block3_conv2, block4_conv2.
    for (cin, cout, size, pad) in [
        (32, 64, 74, 0),
        (64, 64, 224, 1),
        (256, 256, 56, 1),
        (512, 512, 28, 1),
    ] {
        let x =
            Array4::from_shape_vec((1, cin, size, size), uniform(6, cin * size * size)).unwrap();
        let m = Matrix::dense(uniform(7, cout * cin * 9), cout, cin * 9);
        let p = Conv2dParams {
            padding: [pad; 4],
            ..conv(3, 1, 1)
        };
        let label = format!("{cin}to{cout}_{size}x{size}");
        g.bench_function(BenchmarkId::new("conv2d", &label), |b| {
            b.iter(|| ops::conv2d(black_box(x.view()), &m, None, &p))
        });
        // The same layer by Winograd's F(4×4, 3×3), where the CPU runs it.
        if winograd::available() {
            let w = with_winograd(&m, cout, cin);
            g.bench_function(BenchmarkId::new("winograd", &label), |b| {
                b.iter(|| ops::conv2d(black_box(x.view()), &w, None, &p))
            });
        }
    }
    // First layers at stride 2 over an image's three channels, into an output made once, with
    // their bias and activation: MobileNetV2's `Conv1` (TensorFlow's "same" padding, bottom
    // and right) and Xception's `block1_conv1` (no padding).
    for (cout, size, padding, activation) in [
        (32, 224, [0, 0, 1, 1], ops::Activation::Relu6),
        (32, 150, [0; 4], ops::Activation::Relu),
    ] {
        let x = Array4::from_shape_vec((1, 3, size, size), uniform(6, 3 * size * size)).unwrap();
        let m = Matrix::dense(uniform(7, cout * 27), cout, 27);
        let bias = uniform(8, cout);
        let p = Conv2dParams {
            padding,
            ..conv(3, 2, 1)
        };
        let (oh, ow) = p.output_size(size, size).unwrap();
        let mut out = vec![0.0f32; cout * oh * ow];
        let label = format!("3to{cout}_{size}x{size}_s2");
        g.bench_function(BenchmarkId::new("first_layer", &label), |b| {
            b.iter(|| {
                let x = black_box(x.view());
                ops::conv2d_into(x, &m, Some(&bias), &p, activation, &mut out)
            })
        });
        // Split as in a model's pass, with the other worker already spinning: a pass's own
        // first layer also waits for that worker to wake.
        let threads = Threads::new(2);
        g.bench_function(BenchmarkId::new("first_layer_2_threads", &label), |b| {
            in_pass(b, &threads, || {
                let x = black_box(x.view());
                ops::conv2d_into(x, &m, Some(&bias), &p, activation, &mut out)
            })
        });
    }
    g.finish();
}

fn depthwise(c: &mut Criterion) {
    let mut g = c.benchmark_group("depthwise");
    for (channels, size, stride) in [
        (728, 9, 1),
        (1024, 5, 1),
        (728, 18, 1),
        (256, 36, 1),
        (128, 72, 1),
        (960, 7, 1),
        (144, 56, 1),
        (32, 112, 1),
        (96, 112, 2),
        (144, 56, 2),
        (192, 28, 2),
        (576, 14, 2),
    ] {
        let x = Array4::from_shape_vec(
            (1, channels, size, size),
            uniform(3, channels * size * size),
        )
        .unwrap();
        let weights = uniform(4, channels * 9);
        let p = conv(3, stride, channels);
        let m = Matrix::dense(weights.clone(), channels, 9);
        let label = format!("{channels}ch_{size}x{size}_s{stride}");
        g.bench_function(BenchmarkId::new("runtime", &label), |b| {
            b.iter(|| ops::conv2d(black_box(x.view()), &m, None, &p))
        });
        for kernel in ops::DepthwiseKernel::ALL {
            if ops::depthwise_through(kernel, x.view(), &weights, &p).is_none() {
                continue;
            }
            let name = format!("{kernel:?}").to_lowercase();
            g.bench_function(BenchmarkId::new(name, &label), |b| {
                b.iter(|| ops::depthwise_through(kernel, black_box(x.view()), &weights, &p))
            });
        }
        g.bench_function(BenchmarkId::new("general_loop", &label), |b| {
            b.iter(|| ops::depthwise_general(black_box(x.view()), &weights, &p))
        });
    }
    g.finish();
}

/// Max pooling, 3×3 stride 2 with one pixel of padding below and right (Xception's four
/// poolings, 72×72 to 9×9, and a larger plane).
fn max_pool(c: &mut Criterion) {
    let mut g = c.benchmark_group("max_pool");
    for (channels, size) in [(128, 147), (128, 72), (256, 36), (728, 18), (1024, 9)] {
        let x = Array4::from_shape_vec(
            (1, channels, size, size),
            uniform(5, channels * size * size),
        )
        .unwrap();
        let p = ops::PoolParams {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [0, 0, 1, 1],
        };
        let label = format!("{channels}ch_{size}x{size}_3x3s2");
        g.bench_function(BenchmarkId::new("runtime", &label), |b| {
            b.iter(|| ops::pool2d(black_box(x.view()), &p, true))
        });
    }
    g.finish();
}

fn sparse(c: &mut Criterion) {
    let mut g = c.benchmark_group("sparse");
    // Xception's middle flow (9×9) and its 18×18 layers; a density on each side of where the
    // sparse kernel stops paying.
    for (n, kept) in [
        (81, 10),
        (81, 30),
        (81, 50),
        (100, 30),
        (25, 30),
        (324, 30),
        (324, 50),
    ] {
        let (m, k) = (728, 728);
        let x = Array2::from_shape_vec((k, n), uniform(5, k * n)).unwrap();
        let mut w = uniform(6, m * k);
        // Keep every weight whose index hashes below the fraction: scattered like pruning.
        for (i, v) in w.iter_mut().enumerate() {
            if (i.wrapping_mul(2654435761) % 100) >= kept {
                *v = 0.0;
            }
        }
        let csr = Matrix::Sparse(Csr::from_dense(&w, m, k));
        let panels = kernels::ChannelPanels::pack(&w, m, k);
        let dense = Matrix::dense(w, m, k);
        let label = format!("{m}x{k}x{n}_{kept}pct");
        g.bench_function(BenchmarkId::new("csr", &label), |b| {
            b.iter(|| csr.mul_rows(0, m, black_box(x.view())))
        });
        g.bench_function(BenchmarkId::new("dense", &label), |b| {
            b.iter(|| dense.mul_rows(0, m, black_box(x.view())))
        });
        if let (true, Some(panels)) = (kernels::channel_panels_available(), panels) {
            // The dense kernel a layer of small planes takes: the output channels in the lanes.
            let mut out = vec![0f32; m * n];
            let x = x.as_slice().unwrap();
            g.bench_function(BenchmarkId::new("channel_panels", &label), |b| {
                b.iter(|| {
                    let none = kernels::Epilogue::default();
                    kernels::channel_panels_product(&mut out, &panels, 0, black_box(x), n, none)
                })
            });
        }
    }
    g.finish();
}

/// Times `layer` as a model's pass runs its layers: every iteration inside one entry into
/// `threads`' pool, whose workers then spin between layers. Entering the pool costs about as
/// much as the 4096→4096 binary dense layer itself (its workers asleep between criterion's
/// iterations), which a pass pays once for all its layers.
fn in_pass(b: &mut criterion::Bencher<'_>, threads: &Threads, mut layer: impl FnMut() + Send) {
    b.iter_custom(|iters| {
        threads.run(usize::MAX, || {
            let start = Instant::now();
            for _ in 0..iters {
                layer();
            }
            start.elapsed()
        })
    })
}

/// Random signs with one scale per row, as `binary` stores them.
fn binary(rows: usize, cols: usize) -> Binary {
    let bytes = rows * cols.div_ceil(8);
    Binary {
        rows,
        cols,
        scales: uniform(7, rows).iter().map(|v| v.abs() + 0.1).collect(),
        bits: uniform(8, bytes)
            .iter()
            .map(|v| ((v + 0.5) * 255.0) as u8)
            .collect(),
    }
}

fn xnor_layers(c: &mut Criterion) {
    let mut g = c.benchmark_group("xnor");
    let features = 4096;
    let x = Array2::from_shape_vec((1, features), uniform(9, features)).unwrap();
    let bits = xnor::XnorWeight::Bits(xnor::BitRows::from_binary(&binary(features, features)));
    let floats = Matrix::dense(uniform(10, features * features), features, features);
    let mut out = vec![0.0f32; features];
    let mut dense_bits = |b: &mut criterion::Bencher<'_>, threads: &Threads| {
        in_pass(b, threads, || {
            let input = xnor::SignInput::Scaled;
            xnor::dense_into(black_box(x.view()), &bits, None, &input, &mut out)
        })
    };
    g.bench_function("dense_4096x4096_batch1/bits", |b| {
        dense_bits(b, &Threads::new(1))
    });
    g.bench_function("dense_4096x4096_batch1/bits_2_threads", |b| {
        dense_bits(b, &Threads::new(2))
    });
    g.bench_function("dense_4096x4096_batch1/f32", |b| {
        b.iter(|| ops::dense(black_box(x.view()), &floats, None))
    });
    let (channels, size) = (256, 32);
    let x = Array4::from_shape_vec(
        (1, channels, size, size),
        uniform(11, channels * size * size),
    )
    .unwrap();
    let p = conv(3, 1, 1);
    let bits = xnor::XnorWeight::Bits(xnor::BitRows::for_conv(
        &binary(channels, channels * 9),
        channels,
    ));
    let floats = Matrix::dense(uniform(12, channels * channels * 9), channels, channels * 9);
    // Each into an output made once, as a model's pass writes into its arena.
    let mut out = vec![0.0f32; channels * size * size];
    let mut bits_into = |b: &mut criterion::Bencher<'_>, threads: &Threads| {
        in_pass(b, threads, || {
            let input = xnor::SignInput::Scaled;
            xnor::conv2d_into(black_box(x.view()), &bits, None, &p, &input, &mut out)
        })
    };
    g.bench_function("conv3x3_256to256_32x32/bits", |b| {
        bits_into(b, &Threads::new(1))
    });
    g.bench_function("conv3x3_256to256_32x32/bits_2_threads", |b| {
        bits_into(b, &Threads::new(2))
    });
    let mut out = vec![0.0f32; channels * size * size];
    let mut f32_into = |b: &mut criterion::Bencher<'_>, weight: &Matrix<'_>, threads: &Threads| {
        in_pass(b, threads, || {
            let x = black_box(x.view());
            ops::conv2d_into(x, weight, None, &p, ops::Activation::None, &mut out)
        })
    };
    g.bench_function("conv3x3_256to256_32x32/f32", |b| {
        f32_into(b, &floats, &Threads::new(1))
    });
    if winograd::suits(&p, channels, channels) {
        let winograd = with_winograd(&floats, channels, channels);
        g.bench_function("conv3x3_256to256_32x32/f32_winograd", |b| {
            f32_into(b, &winograd, &Threads::new(1))
        });
        g.bench_function("conv3x3_256to256_32x32/f32_winograd_2_threads", |b| {
            f32_into(b, &winograd, &Threads::new(2))
        });
    }
    g.finish();
}

/// BWN: binary weights in real-valued layers, multiplied by adding (`Matrix::Signs`), against
/// the same layers' f32 weights.
fn bwn_layers(c: &mut Criterion) {
    let mut g = c.benchmark_group("bwn");
    let features = 4096;
    let x = Array2::from_shape_vec((1, features), uniform(13, features)).unwrap();
    let weights = binary(features, features);
    let signs = Matrix::Signs(SignRows::from_binary(&weights));
    let floats = Matrix::dense(weights.to_f32(), features, features);
    g.bench_function("dense_4096x4096_batch1/signs", |b| {
        b.iter(|| ops::dense(black_box(x.view()), &signs, None))
    });
    g.bench_function("dense_4096x4096_batch1/f32", |b| {
        b.iter(|| ops::dense(black_box(x.view()), &floats, None))
    });
    // LeNet-5's conv2: 20 → 50 channels, 5×5, unpadded, on 12×12.
    let channels = 50;
    let x = Array4::from_shape_vec((1, 20, 12, 12), uniform(14, 20 * 144)).unwrap();
    let weights = binary(channels, 20 * 25);
    let signs = Matrix::Signs(SignRows::from_binary(&weights));
    let floats = Matrix::dense(weights.to_f32(), channels, 20 * 25);
    let p = Conv2dParams {
        padding: [0; 4],
        ..conv(5, 1, 1)
    };
    g.bench_function("lenet5_conv2_20to50_12x12/signs", |b| {
        b.iter(|| ops::conv2d(black_box(x.view()), &signs, None, &p))
    });
    g.bench_function("lenet5_conv2_20to50_12x12/f32", |b| {
        b.iter(|| ops::conv2d(black_box(x.view()), &floats, None, &p))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = pointwise, conv3x3, depthwise, max_pool, sparse, xnor_layers, bwn_layers
}
criterion_main!(benches);
