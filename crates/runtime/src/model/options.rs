//! How a model is loaded and run: the options, and the densities below which weights run sparse.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RuntimeOptions {
    /// Run weights whose density (fraction of nonzeros) is at most this through sparse kernels;
    /// 0 disables sparse kernels. Convolutions scale it by the plane they run over: their dense
    /// kernel is a blocked GEMM, much faster per weight than a matrix-vector product, and the
    /// CSR kernel's edge over it depends on the plane (`CONV_SPARSE_FACTOR` and its kin).
    pub sparse_below_density: f64,
    /// Check the CRC-32 of weights stored plain dense, which are otherwise borrowed from the
    /// map without a pass over them. Encoded weights are always checked, once, as they are
    /// decoded: decoding reads every byte anyway.
    pub check_crc: bool,
    /// Threads a forward pass may use: 0 for one per core, 1 for the calling thread only.
    /// Results are the same for every count.
    pub threads: usize,
    /// The most memory a forward pass's activations may take; `None` for what the machine
    /// can give. A model whose planned activations exceed it fails to load.
    pub budget: Option<Budget>,
    /// Run stride-1 3×3 convolutions by Winograd's F(4×4, 3×3) where the CPU has AVX-512 or
    /// AVX2 with FMA ([`crate::winograd`]): 4× fewer multiply-adds, at a rounding error a few times the
    /// direct product's and 4× the memory for those layers' weights. `false` keeps the
    /// direct product.
    pub winograd: bool,
    /// Keep each worker of the model's pool on a CPU of its own, where the pool has one
    /// worker for every CPU the process may run on (the default count, or as many threads
    /// given; `parallel::pinning`).
    /// `false` leaves them to the scheduler, for machines where several such processes run
    /// at once.
    pub pin_threads: bool,
}

/// The fraction of [`RuntimeOptions::sparse_below_density`] below which a convolution's
/// weights run sparse on the CSR kernel that sums in registers (AVX-512 or AVX2,
/// [`kernels::sparse_in_registers`]), where its input has at least
/// [`CONV_SPARSE_MIN_PIXELS`] over the stride's square. A dense layer at batch 1 is a
/// matrix-vector product, which the CSR kernel beats up to about 30% of the weights; a
/// convolution is a blocked GEMM, which the AVX-512 CSR kernel beats up to about 40% on planes
/// of 18×18 and more (728×728 at 18×18, one thread, `benches/kernels.rs`: 30% kept 2.6 ms
/// sparse against 3.7 dense, 50% kept 4.3 against 4.0).
pub(super) const CONV_SPARSE_FACTOR: f64 = 4.0 / 3.0;

/// The same fraction for planes of [`CONV_SPARSE_MID_PIXELS`] up to 16×16, where the dense
/// 1×1 product keeps the output channels in its vector lanes ([`kernels::ChannelPanels`]).
/// There the CSR kernel, summing rows of up to 112 in one strip, wins up to about 40% kept:
/// 728×728 at 9×9, one thread, 30% kept 0.64 ms sparse against 0.81 dense, 50% kept 1.02
/// against 0.82 (`benches/kernels.rs`). 35% leaves a margin to that crossing.
pub(super) const MID_CONV_SPARSE_FACTOR: f64 = 7.0 / 6.0;

/// The same fraction for smaller planes still, for the 3×3 convolutions that run by
/// Winograd's F(4×4, 3×3) at a quarter of the multiply-adds, and for every convolution where
/// the portable CSR kernel runs (no AVX2). At 5×5 the CSR kernel lost at 30% kept (0.26
/// against 0.24 ms); with 10% kept it took 0.32 ms against 0.96 at 9×9. The portable kernel
/// took 2.6× the dense time at 30% kept.
pub(super) const SMALL_CONV_SPARSE_FACTOR: f64 = 1.0 / 3.0;

/// The largest of the factors above (and 1, a dense layer's): what a tensor decoded ahead of
/// its layers must be under to be kept as CSR rows ([`Loader::predecode`]).
///
/// [`Loader::predecode`]: super::load::Loader::predecode
pub(super) const MOST_SPARSE_FACTOR: f64 = CONV_SPARSE_FACTOR;

const _: () = assert!(
    MOST_SPARSE_FACTOR >= MID_CONV_SPARSE_FACTOR
        && MOST_SPARSE_FACTOR >= SMALL_CONV_SPARSE_FACTOR
        && MOST_SPARSE_FACTOR >= 1.0
);

/// See [`CONV_SPARSE_FACTOR`]: 16×16. (Before the CSR kernel took rows of up to 112 in one
/// strip, it lost on 9×9 planes too: Xception's 728-channel layers with 30% kept took 24.1 ms
/// sparse against 23.2 dense.)
pub(super) const CONV_SPARSE_MIN_PIXELS: usize = 256;

/// See [`MID_CONV_SPARSE_FACTOR`]: 8×8, between the 5×5 planes where the CSR kernel lost at
/// 30% and the 9×9 ones where it won.
pub(super) const CONV_SPARSE_MID_PIXELS: usize = 64;

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            sparse_below_density: 0.3,
            check_crc: true,
            threads: 0,
            budget: None,
            winograd: true,
            pin_threads: true,
        }
    }
}
