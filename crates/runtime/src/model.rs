//! A runnable model built from a `.cxrm` file's graph, metadata and tensors.
//!
//! Loading resolves every weight the graph uses: stored dense f32 tensors are borrowed from
//! the memory map (no copy); encoded ones are decoded once. Weights that are mostly zero run
//! through sparse (CSR) kernels; the choice depends on the weights' measured density, not on
//! how they were stored, so a pruned model and its decoded-dense twin compute identically.
//! Factored weights run as they are stored: `lowrank` as two thin products, `tucker` as three
//! convolutions (1×1, the core's, 1×1), `binary` weights of XNOR layers (and of a `conv2d` or
//! `dense` a `sign` feeds, fused with it) through the popcount kernels, those of other dense
//! layers through the add-only kernel; anywhere else they are rebuilt once.
//! Batch norm is folded into the convolution or dense layer before it; the mapped pages of
//! every weight copied this way (or decoded) are given back once the copy is made. Shapes are
//! checked through the whole graph at load, so a bad graph fails before any input is read, and
//! they give every activation its place in a per-image arena ([`arena`]): a forward pass
//! writes each layer's output there and allocates nothing of its own.

use super::arena::{self, Lifetime};
use super::ops::{self, Activation, Conv2dParams, Csr, Matrix, Operand, PoolParams};
use super::parallel::{self, Threads};
use super::signs::SignRows;
use super::winograd::{self, WinogradWeights};
use super::xnor::{self, BitRows, SignInput, XnorWeight};
use super::{kernels, scratch};
use cxrm_format as format;
use cxrm_format::budget::Budget;
use cxrm_format::container::graph::{Graph, INPUT, Node};
pub use cxrm_format::container::input_spec::InputSpec;
use cxrm_format::container::reader::Cxrm;
use cxrm_format::container::table::TensorRecord;
use cxrm_format::container::value::{self, Value};
use cxrm_format::dtype::DType;
use cxrm_format::encoding::{Factored, StageId};
use cxrm_format::error::{Error, Result};
use ndarray::{Array2, Array4, ArrayView2, ArrayView3, ArrayView4, ArrayViewMut2};
use std::borrow::Cow;
use std::ops::Range;
use std::sync::Mutex;

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
const CONV_SPARSE_FACTOR: f64 = 4.0 / 3.0;
/// The same fraction for planes of [`CONV_SPARSE_MID_PIXELS`] up to 16×16, where the dense
/// 1×1 product keeps the output channels in its vector lanes ([`kernels::ChannelPanels`]).
/// There the CSR kernel, summing rows of up to 112 in one strip, wins up to about 40% kept:
/// 728×728 at 9×9, one thread, 30% kept 0.64 ms sparse against 0.81 dense, 50% kept 1.02
/// against 0.82 (`benches/kernels.rs`). 35% leaves a margin to that crossing.
const MID_CONV_SPARSE_FACTOR: f64 = 7.0 / 6.0;
/// The same fraction for smaller planes still, for the 3×3 convolutions that run by
/// Winograd's F(4×4, 3×3) at a quarter of the multiply-adds, and for every convolution where
/// the portable CSR kernel runs (no AVX2). At 5×5 the CSR kernel lost at 30% kept (0.26
/// against 0.24 ms); with 10% kept it took 0.32 ms against 0.96 at 9×9. The portable kernel
/// took 2.6× the dense time at 30% kept.
const SMALL_CONV_SPARSE_FACTOR: f64 = 1.0 / 3.0;
/// The largest of the factors above (and 1, a dense layer's): what a tensor decoded ahead of
/// its layers must be under to be kept as CSR rows ([`Loader::predecode`]).
const MOST_SPARSE_FACTOR: f64 = CONV_SPARSE_FACTOR;
const _: () = assert!(
    MOST_SPARSE_FACTOR >= MID_CONV_SPARSE_FACTOR
        && MOST_SPARSE_FACTOR >= SMALL_CONV_SPARSE_FACTOR
        && MOST_SPARSE_FACTOR >= 1.0
);
/// See [`CONV_SPARSE_FACTOR`]: 16×16. (Before the CSR kernel took rows of up to 112 in one
/// strip, it lost on 9×9 planes too: Xception's 728-channel layers with 30% kept took 24.1 ms
/// sparse against 23.2 dense.)
const CONV_SPARSE_MIN_PIXELS: usize = 256;
/// See [`MID_CONV_SPARSE_FACTOR`]: 8×8, between the 5×5 planes where the CSR kernel lost at
/// 30% and the 9×9 ones where it won.
const CONV_SPARSE_MID_PIXELS: usize = 64;

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

enum Op<'a> {
    Conv {
        weight: Matrix<'a>,
        bias: Option<Vec<f32>>,
        params: Conv2dParams,
        /// A following `relu`/`relu6`, fused at load ([`fuse_activations`]).
        activation: Activation,
        /// Whether the layer's second input is added to its output, after the activation: a
        /// residual `add` fused at load ([`fuse_residual_adds`]).
        residual: bool,
    },
    Dense {
        weight: Matrix<'a>,
        bias: Option<Vec<f32>>,
    },
    /// A Tucker-2 convolution: 1×1 to `r_in` channels, the core's window to `r_out`, 1×1 to
    /// the output channels; the bias comes last.
    ConvChain {
        steps: Vec<(Matrix<'a>, Conv2dParams)>,
        bias: Option<Vec<f32>>,
    },
    /// XNOR-Net's convolution, or a `sign` fused into the binary `conv2d` it feeds
    /// ([`fuse_signs`]); `input` says which.
    XnorConv {
        weight: XnorWeight<'a>,
        bias: Option<Vec<f32>>,
        params: Conv2dParams,
        input: SignInput,
    },
    XnorDense {
        weight: XnorWeight<'a>,
        bias: Option<Vec<f32>>,
        input: SignInput,
    },
    BatchNorm {
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
    Relu,
    Relu6,
    Softmax,
    Flatten,
    MaxPool(PoolParams),
    AvgPool(PoolParams),
    GlobalAvgPool,
    Add,
    /// Zeros around each channel: top, left, bottom, right.
    Pad([usize; 4]),
    Sigmoid,
    HardSwish,
    /// Element-wise, or each channel of the first input scaled by the second (`[C]`).
    Mul,
    /// The inputs joined along axis 1 (channels, or vector elements).
    Concat,
    /// `+1` where `x ≥ τ`, else `−1`: `τ` per channel (`[C, H, W]`) or per element (vectors),
    /// 0 without thresholds (spec §7, 1.5).
    Sign {
        threshold: Option<Vec<f32>>,
    },
    /// A layer folded into the one before it: what it was, for `layer_info`.
    Identity(&'static str),
}

impl Op<'_> {
    /// Adds the bytes of this layer's weights to `bytes`, by where they live.
    fn add_weight_bytes(&self, bytes: &mut WeightBytes) {
        match self {
            Op::Conv { weight, bias, .. } | Op::Dense { weight, bias } => {
                bytes.add_matrix(weight);
                bias.iter().for_each(|b| bytes.add_owned(b));
            }
            Op::ConvChain { steps, bias } => {
                steps.iter().for_each(|(m, _)| bytes.add_matrix(m));
                bias.iter().for_each(|b| bytes.add_owned(b));
            }
            Op::XnorConv { weight, bias, .. } | Op::XnorDense { weight, bias, .. } => {
                match weight {
                    XnorWeight::Bits(b) => {
                        bytes.owned += 8 * b.bits.len() as u64;
                        bytes.add_owned(&b.alpha);
                    }
                    XnorWeight::Float(m) => bytes.add_matrix(m),
                }
                bias.iter().for_each(|b| bytes.add_owned(b));
            }
            Op::BatchNorm { scale, shift } => {
                bytes.add_owned(scale);
                bytes.add_owned(shift);
            }
            _ => {}
        }
    }

    /// Multiply-adds per image of the products that split over threads, given the layer's
    /// output shape; 0 for layers that always run on one thread.
    fn work(&self, out_shape: &[usize]) -> usize {
        let positions: usize = out_shape.iter().skip(1).product();
        match self {
            Op::Conv { weight, .. } => weight.work() * positions,
            Op::ConvChain { steps, .. } => {
                steps.iter().map(|(m, _)| m.work()).sum::<usize>() * positions
            }
            Op::Dense { weight, .. } => weight.work(),
            _ => 0,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Input,
    Node(usize),
}

struct Layer<'a> {
    name: String,
    op: Op<'a>,
    inputs: Vec<Source>,
}

/// The most images of a batch that one thread runs through the layers together
/// ([`Model::forward_images`]), each with an arena of its own. Four took most of what more
/// gave (Xception's 2048×1536 product at 5×5: 2.44 ms an image alone, 1.99 four at a time,
/// 1.95 eight, 2.09 sixteen; its 728×728 at 9×9: 1.03, 1.02, 0.99), and Xception's
/// throughput at batch 16 was level at four and eight (four alternating pairs) for half the
/// arenas.
const MOST_IMAGES_TOGETHER: usize = 4;

/// One value per image of a group ([`Model::forward_images`]), held inline: a batch's pass
/// allocates nothing for its groups' lists of images, arenas and operands.
type Group<T> = arrayvec::ArrayVec<T, MOST_IMAGES_TOGETHER>;

/// The most pixels of a 1×1 convolution that runs a group's images together: wider ones fill
/// whole panels on their own and read their weights once for many panels. Run together,
/// their inputs come from further away (a layer's eight inputs do not fit in L2), and
/// Xception's 72×72 and 36×36 layers were slower (2.25 against 2.13 ms an image), as were the
/// depthwise and pooling layers between them.
const TOGETHER_MOST_PIXELS: usize = 256;
/// The most bytes of group arenas ([`GroupPlan`]) a thread holds at once: fewer images go
/// together where the activations they share are large.
const GROUP_ARENA_BYTES: u64 = 64 << 20;

/// A model ready to run, borrowing its dense weights from the file.
pub struct Model<'a> {
    layers: Vec<Layer<'a>>,
    pub input: InputSpec,
    pub classes: Vec<String>,
    /// The input's shape and each layer's output shape (without the batch dimension).
    input_shape: Vec<usize>,
    shapes: Vec<Vec<usize>>,
    /// Where each value of a pass lives in an image's arena: the input first, then each
    /// layer's output.
    slots: Vec<Range<usize>>,
    /// For each layer that runs in place, the input whose memory its output takes over.
    in_place: Vec<Option<usize>>,
    /// Whether a pass reads a contiguous image where the caller holds it, instead of a copy in
    /// the arena: so unless a layer writes over the input in place.
    reads_input_in_place: bool,
    /// The `f32`s of one image's arena.
    arena_len: usize,
    /// Arenas not in use by a pass: one per image that has run at once, kept for the next.
    arenas: Mutex<Vec<Vec<f32>>>,
    /// Where a batch's groups keep their values from the first layer they run together; none
    /// where no layer does.
    group: Option<GroupPlan>,
    /// Group arenas not in use, kept for the next batch.
    group_arenas: Mutex<Vec<Vec<f32>>>,
    /// Multiply-adds of one image's pass through the layers that split over threads.
    work_per_image: usize,
    /// The most activation bytes one image keeps alive at once, planned at load: the largest
    /// live set, with in-place layers sharing their input's memory.
    pub peak_bytes_per_image: u64,
    /// The bytes of one image's arena, which holds every activation of a pass (at least
    /// [`Model::peak_bytes_per_image`]: values that are never alive together share memory).
    pub arena_bytes_per_image: u64,
    /// Tensors decoded while loading (each at most once; dense f32 is read in place).
    pub weights_decoded: usize,
    budget: Budget,
    threads: Threads,
}

/// The bytes of weights a model reads on every pass: borrowed from the mapped file (resident
/// once a pass has read them) and held as its own copies (folded, decoded, repacked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WeightBytes {
    pub mapped: u64,
    pub owned: u64,
}

impl WeightBytes {
    fn add_matrix(&mut self, m: &Matrix<'_>) {
        match m {
            Matrix::Dense {
                data: Cow::Borrowed(v),
                ..
            } => self.mapped += 4 * v.len() as u64,
            Matrix::Dense { data, .. } => self.owned += 4 * data.len() as u64,
            Matrix::Sparse(csr) => {
                self.owned += (8 * csr.row_ptr.len() + 4 * csr.col.len() + 4 * csr.val.len()) as u64
            }
            Matrix::Product(factors) => factors.iter().for_each(|f| self.add_matrix(f)),
            Matrix::Signs(s) => self.owned += s.bytes(),
            Matrix::Panels(p) => self.owned += p.bytes(),
            Matrix::Winograd { dense, domain } => {
                // Dense weights read from the map were released: no pass reads them.
                if !matches!(
                    **dense,
                    Matrix::Dense {
                        data: Cow::Borrowed(_),
                        ..
                    }
                ) {
                    self.add_matrix(dense);
                }
                self.owned += domain.bytes();
            }
        }
    }

    fn add_owned(&mut self, values: &[f32]) {
        self.owned += 4 * values.len() as u64;
    }
}

/// Per-layer summary, for `cxrm bench` and inspection.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerInfo {
    pub name: String,
    pub op: &'static str,
    pub output_shape: Vec<usize>,
    /// `dense`, `sparse` (CSR kernel), `lowrank` (a product of factors), `tucker` (three
    /// convolutions), `xnor` (popcount: XNOR-Net layers, and binary layers with their `sign`
    /// fused), `xnor-float` (signs times float weights), `binary` (binary weights added and
    /// subtracted), or empty for layers without weights.
    pub kernel: &'static str,
    pub weights_borrowed: bool,
    /// What the layer computes, finer than `op` for convolutions: `conv1x1`, `conv3x3` (any
    /// window), `depthwise3x3` (one input channel per filter), else `op`. For profiles.
    pub kind: String,
    /// Multiply-adds of the layer's products per image (0 for layers without weights).
    pub multiply_adds: usize,
}

/// A weight as loaded: values (borrowed from the map when stored dense f32), or factors.
enum Loaded<'a> {
    Values(Cow<'a, [f32]>),
    Factored(Factored),
    /// A decoded weight sparse enough for the CSR kernels, shared by every node that uses it.
    Sparse(Csr),
}

/// `rows × cols` row-major to `cols × rows`.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = m[r * cols + c];
        }
    }
    t
}

/// The three convolutions of a Tucker-2 layer: `U_inᵀ` (1×1), the core (the layer's own
/// window, stride, padding and dilation), `U_out` (1×1).
fn tucker_steps<'a>(
    t: &cxrm_format::encoding::tucker::Tucker,
    p: Conv2dParams,
) -> Vec<(Matrix<'a>, Conv2dParams)> {
    let pointwise = Conv2dParams {
        kernel: [1, 1],
        stride: [1, 1],
        padding: [0; 4],
        dilation: [1, 1],
        groups: 1,
    };
    vec![
        (
            Matrix::dense(transpose(&t.u_in, t.inp, t.rank_in), t.rank_in, t.inp),
            pointwise,
        ),
        (
            Matrix::dense(t.core.clone(), t.rank_out, t.rank_in * t.spatial),
            p,
        ),
        (Matrix::dense(t.u_out.clone(), t.out, t.rank_out), pointwise),
    ]
}

struct Loader<'f, 'a> {
    file: &'f Cxrm<'a>,
    options: RuntimeOptions,
    /// Decoded weights in CSR form, by tensor name: only those more than one node uses, since
    /// each cached matrix is a second copy of the layer's until loading ends.
    sparse: std::cell::RefCell<std::collections::HashMap<String, Csr>>,
    /// Tensors that more than one node names.
    shared: std::collections::HashSet<String>,
    /// Large encoded tensors decoded ahead of the layers, largest first ([`Loader::predecode`]);
    /// each is taken by the first layer that asks for it.
    decoded: std::cell::RefCell<std::collections::HashMap<String, Decoded>>,
    /// Tensors decoded so far (dense ones read in place do not count).
    decodes: std::cell::Cell<usize>,
}

/// A tensor decoded ahead of its layer: its values, or CSR rows where few enough of them are
/// nonzero that some layer could run it sparse.
enum Decoded {
    Values(Vec<f32>),
    Sparse(Csr),
}

impl<'a> Loader<'_, 'a> {
    /// A node's tensor record; a tensor with a zero-size dimension is refused here, since no
    /// layer computes anything with it.
    fn record(&self, node: &Node, name: &str) -> Result<&TensorRecord<'a>> {
        let record = self.file.tensor(name).map_err(|_| {
            Error::Model(format!(
                "node {}: tensor {name:?} is not in the file",
                cxrm_format::text::escape(&node.name)
            ))
        })?;
        if record.shape.contains(&0) {
            return Err(Error::Model(format!(
                "node {}: tensor {:?} has shape {:?}, with nothing in it",
                cxrm_format::text::escape(&node.name),
                cxrm_format::text::escape(name),
                record.shape
            )));
        }
        Ok(record)
    }

    /// A tensor as f32, borrowed when it is stored dense f32, decoded otherwise.
    fn tensor(&self, node: &Node, name: &str) -> Result<(Cow<'a, [f32]>, Vec<usize>)> {
        let record = self.record(node, name)?;
        if self.options.check_crc && record.is_plain_dense() {
            self.file.check_crc(record)?;
        }
        let shape: Vec<usize> = record.shape.iter().map(|&d| d as usize).collect();
        if record.is_plain_dense() && record.dtype == DType::F32 {
            let view = self.file.view(name)?;
            if let Cow::Borrowed(bytes) = view.bytes
                && let Ok(values) = bytemuck::try_cast_slice::<u8, f32>(bytes)
                && cfg!(target_endian = "little")
            {
                return Ok((Cow::Borrowed(values), shape));
            }
        }
        let decoded = self.decoded.borrow_mut().remove(name);
        let values = match decoded {
            Some(Decoded::Values(values)) => values,
            Some(Decoded::Sparse(csr)) => self.densified(node, name, &csr)?,
            None => self.decode(record)?,
        };
        Ok((Cow::Owned(values), shape))
    }

    /// A tensor kept as CSR rows at [`Loader::predecode`], back in dense form for a layer that
    /// runs it dense.
    fn densified(&self, node: &Node, name: &str, csr: &Csr) -> Result<Vec<f32>> {
        csr.to_dense().ok_or_else(|| {
            Error::Model(format!(
                "node {}: no memory for the {}×{} values of {:?}",
                cxrm_format::text::escape(&node.name),
                csr.rows,
                csr.cols,
                cxrm_format::text::escape(name)
            ))
        })
    }

    /// The CSR rows [`Loader::predecode`] kept for `name`, taken out of its keeping.
    fn take_predecoded_sparse(&self, name: &str) -> Option<Csr> {
        let mut decoded = self.decoded.borrow_mut();
        match decoded.remove(name)? {
            Decoded::Sparse(csr) => Some(csr),
            values => {
                decoded.insert(name.to_string(), values);
                None
            }
        }
    }

    /// A tensor decoded to f32, its mapped pages given back.
    fn decode(&self, record: &TensorRecord<'a>) -> Result<Vec<f32>> {
        self.decodes.set(self.decodes.get() + 1);
        let values = self.file.decode_record(record)?.to_f32_vec();
        self.file.release_tensor(record);
        Ok(values)
    }

    /// Decode the graph's large encoded tensors now, largest first. Decoding one holds its
    /// bytes, its f32 copy and the decoder's working memory at once; in graph order the largest
    /// (an exit-flow pointwise weight, say) comes last, on top of every weight loaded before it,
    /// and set the load's peak. First, they meet an almost empty heap. Tensors stored dense f32
    /// (read in place) or factored (run as stored) are left to the layers, as are small ones.
    ///
    /// A tensor sparse enough for the most generous of the layers' thresholds is kept as CSR
    /// rows at once, the layer that runs it dense making its values again: kept dense, every
    /// pruned weight was decoded whole before any layer took its CSR rows, and the pruned
    /// Xception (30% kept, 59.5 MB of weights as the layers keep them) peaked at 92.7 MB while
    /// loading, past the memory bound.
    fn predecode(&self, graph: &Graph) -> Result<()> {
        const LARGE: u64 = 1 << 16;
        let mut names: Vec<&TensorRecord<'a>> = graph
            .nodes
            .iter()
            .flat_map(|n| &n.weights)
            .filter_map(|name| self.file.tensor(name).ok())
            .filter(|r| r.elements >= LARGE && !r.is_plain_dense())
            .filter(|r| {
                !r.stages
                    .first()
                    .and_then(|s| s.id())
                    .is_some_and(StageId::is_factored)
            })
            .collect();
        names.sort_by_key(|r| (std::cmp::Reverse(r.elements), r.index));
        names.dedup_by_key(|r| r.index);
        let most_sparse = self.options.sparse_below_density * MOST_SPARSE_FACTOR;
        for record in names {
            let values = self.decode(record)?;
            let rows = record.shape.first().map_or(1, |&r| r as usize).max(1);
            let cols = values.len() / rows;
            let decoded = match sparse_rows(&values, (rows, cols), most_sparse) {
                Some(csr) => Decoded::Sparse(csr),
                None => Decoded::Values(values),
            };
            self.decoded
                .borrow_mut()
                .insert(record.name.to_string(), decoded);
        }
        Ok(())
    }

    /// `m` with its values copied out of the map, whose pages are given back.
    fn owned(&self, m: Matrix<'a>) -> Matrix<'a> {
        match m {
            Matrix::Dense {
                data: Cow::Borrowed(values),
                rows,
                cols,
            } => Matrix::dense(copy_out_releasing(values, &|v| self.release(v)), rows, cols),
            other => other,
        }
    }

    /// Drops the mapped pages under `values` when they are borrowed from the file and the
    /// model keeps a copy of its own instead ([`Cxrm::release`]); no-op for owned values.
    fn release(&self, values: &[f32]) {
        self.file.release(bytemuck::cast_slice(values));
    }

    /// A weight tensor as the runtime will run it: its factors when it is stored factored,
    /// else its values, as CSR rows when at most `sparse_below` of them are nonzero.
    fn weight(
        &self,
        node: &Node,
        name: &str,
        sparse_below: f64,
    ) -> Result<(Loaded<'a>, Vec<usize>)> {
        let record = self.record(node, name)?;
        let shape: Vec<usize> = record.shape.iter().map(|&d| d as usize).collect();
        if let Some(csr) = self.sparse.borrow().get(name)
            && density(csr.val.len(), csr.rows * csr.cols) <= sparse_below
        {
            return Ok((Loaded::Sparse(csr.clone()), shape));
        }
        if let Some(f) = self.file.read_factored(record)? {
            self.decodes.set(self.decodes.get() + 1);
            self.file.release_tensor(record);
            return Ok((Loaded::Factored(f), shape));
        }
        if let Some(csr) = self.take_predecoded_sparse(name) {
            if density(csr.val.len(), csr.rows * csr.cols) > sparse_below {
                let values = self.densified(node, name, &csr)?;
                return Ok((Loaded::Values(Cow::Owned(values)), shape));
            }
            return Ok((self.sparse_weight(name, csr), shape));
        }
        let (values, shape) = self.tensor(node, name)?;
        // A decoded weight that the CSR kernels will take is kept in that form, so a weight
        // shared by many nodes is decoded and scanned once, not once per node.
        if let Cow::Owned(v) = &values
            && let [rows, ..] = shape[..]
            && let Some(csr) = sparse_rows(v, (rows, v.len() / rows.max(1)), sparse_below)
        {
            return Ok((self.sparse_weight(name, csr), shape));
        }
        Ok((Loaded::Values(values), shape))
    }

    /// `csr` as a layer's weight, a copy kept for the other nodes when more than one uses it.
    fn sparse_weight(&self, name: &str, csr: Csr) -> Loaded<'a> {
        if self.shared.contains(name) {
            self.sparse
                .borrow_mut()
                .insert(name.to_string(), csr.clone());
        }
        Loaded::Sparse(csr)
    }

    /// A `rows × cols` weight matrix: low-rank and matrix-shaped Tucker factors as products,
    /// anything else as values (sparse when mostly zero).
    fn weight_matrix(
        &self,
        loaded: Loaded<'a>,
        rows: usize,
        cols: usize,
        sparse_below: f64,
    ) -> Matrix<'a> {
        match loaded {
            Loaded::Values(v) => self.matrix(v, rows, cols, sparse_below),
            Loaded::Sparse(csr) => Matrix::Sparse(csr),
            Loaded::Factored(Factored::LowRank(lr)) => Matrix::Product(vec![
                Matrix::dense(lr.u, rows, lr.rank),
                Matrix::dense(lr.v, lr.rank, cols),
            ]),
            Loaded::Factored(Factored::Tucker(t)) if t.spatial == 1 => Matrix::Product(vec![
                Matrix::dense(t.u_out.clone(), t.out, t.rank_out),
                Matrix::dense(t.core.clone(), t.rank_out, t.rank_in),
                Matrix::dense(transpose(&t.u_in, t.inp, t.rank_in), t.rank_in, t.inp),
            ]),
            Loaded::Factored(Factored::Binary(b)) => Matrix::Signs(SignRows::from_binary(&b)),
            Loaded::Factored(f) => self.matrix(Cow::Owned(f.to_f32()), rows, cols, sparse_below),
        }
    }

    /// The weights of an XNOR layer: bits when stored `binary`, else a float matrix.
    /// `channels` is the input channel count of a convolution (`None` for a dense layer).
    fn xnor_weight(
        &self,
        loaded: Loaded<'a>,
        rows: usize,
        cols: usize,
        channels: Option<usize>,
    ) -> XnorWeight<'a> {
        match loaded {
            Loaded::Factored(Factored::Binary(b)) => XnorWeight::Bits(match channels {
                Some(c) => BitRows::for_conv(&b, c),
                None => BitRows::from_binary(&b),
            }),
            other => XnorWeight::Float(self.weight_matrix(
                other,
                rows,
                cols,
                self.options.sparse_below_density,
            )),
        }
    }

    fn matrix(
        &self,
        data: Cow<'a, [f32]>,
        rows: usize,
        cols: usize,
        sparse_below: f64,
    ) -> Matrix<'a> {
        match sparse_rows(&data, (rows, cols), sparse_below) {
            Some(csr) => {
                self.release(&data);
                Matrix::Sparse(csr)
            }
            None => Matrix::Dense { data, rows, cols },
        }
    }

    fn bias(&self, node: &Node, index: usize, len: usize) -> Result<Option<Vec<f32>>> {
        let Some(name) = node.weights.get(index) else {
            return Ok(None);
        };
        let (b, shape) = self.tensor(node, name)?;
        if b.len() != len || shape.len() != 1 {
            return Err(Error::Model(format!(
                "node {}: bias {name:?} has shape {shape:?}, expected [{len}]",
                node.name
            )));
        }
        let owned = b.to_vec();
        self.release(&b);
        Ok(Some(owned))
    }
}

impl<'a> Model<'a> {
    pub fn load(file: &Cxrm<'a>) -> Result<Model<'a>> {
        Self::load_with(file, RuntimeOptions::default())
    }

    pub fn load_with(file: &Cxrm<'a>, options: RuntimeOptions) -> Result<Model<'a>> {
        let graph = file
            .graph()?
            .ok_or_else(|| Error::Model("the file has no graph section".into()))?;
        if graph.nodes.is_empty() {
            return Err(Error::Model("the graph has no nodes".into()));
        }
        let meta = file.metadata()?;
        let input = InputSpec::from_metadata(&meta)?;
        let classes: Vec<String> =
            match value::get(&meta, "model.classes").and_then(Value::as_array) {
                Some(items) => items
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| Error::Model("model.classes must be strings".into()))?,
                None => Vec::new(),
            };
        let mut uses = std::collections::HashMap::<&str, usize>::new();
        for name in graph.nodes.iter().flat_map(|n| &n.weights) {
            *uses.entry(name).or_default() += 1;
        }
        let loader = Loader {
            file,
            options,
            sparse: Default::default(),
            shared: uses
                .into_iter()
                .filter(|&(_, n)| n > 1)
                .map(|(name, _)| name.to_string())
                .collect(),
            decodes: Default::default(),
            decoded: Default::default(),
        };
        loader.predecode(&graph)?;
        let mut layers: Vec<Layer<'a>> = Vec::with_capacity(graph.nodes.len());
        let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(graph.nodes.len());
        let input_shape = vec![input.channels, input.height, input.width];
        let budget = options.budget.unwrap_or_default();
        budget.check(
            || "the model's input".into(),
            elements(&input_shape).saturating_mul(4),
        )?;
        if let Some([rh, rw]) = input.fixed_resized_size() {
            budget.check(
                || "the resized image before its crop (input.crop_from)".into(),
                (input.channels as u64)
                    .saturating_mul(rh as u64)
                    .saturating_mul(rw as u64),
            )?;
        }
        // Node names to layer indices, so that resolving inputs stays linear in the graph.
        let mut index: std::collections::HashMap<&str, usize> =
            std::collections::HashMap::with_capacity(graph.nodes.len());
        for node in &graph.nodes {
            let inputs: Vec<Source> = node
                .inputs
                .iter()
                .map(|i| {
                    if i == INPUT {
                        Source::Input
                    } else {
                        Source::Node(index[i.as_str()])
                    }
                })
                .collect();
            let in_shapes: Vec<&Vec<usize>> = inputs
                .iter()
                .map(|s| match s {
                    Source::Input => &input_shape,
                    Source::Node(i) => &shapes[*i],
                })
                .collect();
            let (op, out_shape) = build_op(&loader, node, &in_shapes)?;
            if out_shape.contains(&0) {
                return Err(Error::Model(format!(
                    "node {} ({}) gives an empty output, shape {out_shape:?}",
                    cxrm_format::text::escape(&node.name),
                    node.op
                )));
            }
            index.insert(&node.name, layers.len());
            shapes.push(out_shape);
            layers.push(Layer {
                name: node.name.clone(),
                op,
                inputs,
            });
        }
        fold_batch_norms(&mut layers, &|copied| loader.release(copied));
        fuse_signs(&mut layers, &shapes);
        decode_binary_convolutions(&mut layers);
        fuse_activations(&mut layers);
        pack_channel_panels(&mut layers, &shapes, &|copied| loader.release(copied));
        if options.winograd {
            transform_for_winograd(&mut layers, &|copied| loader.release(copied));
        }
        // Last: it changes layers' inputs, which the passes above count.
        fuse_residual_adds(&mut layers);
        let out = shapes.last().expect("nonempty");
        if out.len() != 1 {
            return Err(Error::Model(format!(
                "the last node must give a vector per image (e.g. after flatten/dense), it gives shape {out:?}"
            )));
        }
        if !classes.is_empty() && classes.len() != out[0] {
            return Err(Error::Model(format!(
                "model.classes names {} classes, the output has {}",
                classes.len(),
                out[0]
            )));
        }
        let mut last_use: Vec<usize> = (0..layers.len()).collect();
        for (i, l) in layers.iter().enumerate() {
            for s in &l.inputs {
                if let Source::Node(j) = s {
                    last_use[*j] = i;
                }
            }
        }
        let work_per_image = layers.iter().zip(&shapes).map(|(l, s)| l.op.work(s)).sum();
        let in_place = in_place_inputs(&layers, &input_shape, &shapes, &last_use);
        let reads_input_in_place = !layers
            .iter()
            .zip(&in_place)
            .any(|(l, k)| k.is_some_and(|k| l.inputs[k] == Source::Input));
        let (lifetimes, storage) =
            value_lifetimes(&input_shape, &shapes, &layers, &last_use, &in_place);
        let peak_live = arena::peak_live(&lifetimes);
        let peak_bytes_per_image = peak_live.saturating_mul(4);
        budget.check(
            || "one image's activations at their peak".into(),
            peak_bytes_per_image,
        )?;
        let threads = Threads::pinned_if(options.threads, options.pin_threads);
        // Values that every thread reads whole kept apart from what comes soon after, where
        // that costs no memory. No placement is shorter than the peak, so a spread one that
        // reaches it is kept without planning the plain one too (a long graph takes seconds).
        let apart = placement_lifetimes(&layers, &shapes, &storage, &lifetimes, threads.count());
        let placement = match (apart != lifetimes).then(|| arena::place(&apart)) {
            Some(spread) if spread.len as u64 <= peak_live => spread,
            Some(spread) => {
                let plain = arena::place(&lifetimes);
                if spread.len <= plain.len {
                    spread
                } else {
                    plain
                }
            }
            None => arena::place(&lifetimes),
        };
        let arena_bytes_per_image = (placement.len as u64).saturating_mul(4);
        budget.check(
            || "one image's activation arena".into(),
            arena_bytes_per_image,
        )?;
        let lens: Vec<usize> = std::iter::once(&input_shape)
            .chain(&shapes)
            .map(|shape| elements(shape) as usize)
            .collect();
        let slots = storage
            .iter()
            .zip(&lens)
            .map(|(&at, &len)| placement.range(at, len))
            .collect();
        let group = (0..layers.len())
            .find(|&i| runs_images_together(&layers[i], &shapes[i], in_place[i]))
            .map(|first| GroupPlan::new(first, &lifetimes, &storage, &lens, &placement));
        Ok(Model {
            layers,
            input,
            classes,
            input_shape,
            shapes,
            slots,
            in_place,
            reads_input_in_place,
            arena_len: placement.len,
            arenas: Mutex::new(Vec::new()),
            group,
            group_arenas: Mutex::new(Vec::new()),
            work_per_image,
            peak_bytes_per_image,
            arena_bytes_per_image,
            budget,
            weights_decoded: loader.decodes.get(),
            threads,
        })
    }

    /// The weights a pass reads, by where they live.
    pub fn weight_bytes(&self) -> WeightBytes {
        let mut bytes = WeightBytes::default();
        for layer in &self.layers {
            layer.op.add_weight_bytes(&mut bytes);
        }
        bytes
    }

    /// The threads a forward pass uses.
    pub fn threads(&self) -> usize {
        self.threads.count()
    }

    /// How the single-image passes so far ran: on one thread or split over the threads.
    /// With the default count this is its choice under the machine's load.
    pub fn layer_passes(&self) -> parallel::LayerPasses {
        self.threads.layer_passes()
    }

    pub fn num_classes(&self) -> usize {
        self.shapes.last().map_or(0, |s| s[0])
    }

    /// Whether the graph itself ends in softmax (its outputs are probabilities).
    pub fn ends_in_softmax(&self) -> bool {
        matches!(self.layers.last().map(|l| &l.op), Some(Op::Softmax))
    }

    pub fn layer_info(&self) -> Vec<LayerInfo> {
        self.layers
            .iter()
            .zip(&self.shapes)
            .map(|(l, s)| {
                let (op, w) = match &l.op {
                    Op::Conv { weight, .. } => ("conv2d", Some(weight)),
                    Op::Dense { weight, .. } => ("dense", Some(weight)),
                    Op::ConvChain { .. } => ("conv2d", None),
                    Op::XnorConv { input, .. } => match input {
                        SignInput::Scaled => ("xnor_conv2d", None),
                        SignInput::Thresholds(_) => ("conv2d", None),
                    },
                    Op::XnorDense { input, .. } => match input {
                        SignInput::Scaled => ("xnor_dense", None),
                        SignInput::Thresholds(_) => ("dense", None),
                    },
                    Op::BatchNorm { .. } => ("batch_norm", None),
                    Op::Relu => ("relu", None),
                    Op::Relu6 => ("relu6", None),
                    Op::Softmax => ("softmax", None),
                    Op::Flatten => ("flatten", None),
                    Op::MaxPool(_) => ("max_pool2d", None),
                    Op::AvgPool(_) => ("avg_pool2d", None),
                    Op::GlobalAvgPool => ("global_avg_pool", None),
                    Op::Add => ("add", None),
                    Op::Pad(_) => ("pad", None),
                    Op::Sigmoid => ("sigmoid", None),
                    Op::HardSwish => ("hard_swish", None),
                    Op::Mul => ("mul", None),
                    Op::Concat => ("concat", None),
                    Op::Sign { .. } => ("sign", None),
                    Op::Identity(what) => (*what, None),
                };
                let kernel = match (&l.op, w) {
                    (Op::ConvChain { .. }, _) => "tucker",
                    (Op::XnorConv { weight, .. } | Op::XnorDense { weight, .. }, _) => match weight
                    {
                        XnorWeight::Bits(_) => "xnor",
                        XnorWeight::Float(_) => "xnor-float",
                    },
                    (_, Some(Matrix::Sparse(_))) => "sparse",
                    (_, Some(Matrix::Product(_))) => "lowrank",
                    (_, Some(Matrix::Signs(_))) => "binary",
                    (_, Some(Matrix::Winograd { .. })) => "winograd",
                    (_, Some(_)) => "dense",
                    (_, None) => "",
                };
                let kind = match &l.op {
                    Op::Conv { weight, params, .. } => {
                        let [kh, kw] = params.kernel;
                        let depthwise = params.groups > 1 && weight.cols() == kh * kw;
                        let name = if depthwise { "depthwise" } else { "conv" };
                        format!("{name}{kh}x{kw}")
                    }
                    _ => op.to_string(),
                };
                LayerInfo {
                    name: l.name.clone(),
                    op,
                    output_shape: s.clone(),
                    kernel,
                    kind,
                    multiply_adds: l.op.work(s),
                    weights_borrowed: matches!(
                        w,
                        Some(Matrix::Dense {
                            data: Cow::Borrowed(_),
                            ..
                        })
                    ),
                }
            })
            .collect()
    }

    /// Run a batch `[n, C, H, W]` (already preprocessed) and return the last layer's output
    /// `[n, classes]`: logits, or probabilities when the graph ends in softmax.
    ///
    /// A single image runs through the whole graph in an arena of its own. A batch's images
    /// are shared among the threads in groups ([`Model::forward_images`]), which run the small
    /// 1×1 convolutions as one product over their images. Every activation is written into the
    /// place planned for it at load, so a batch-1 pass allocates nothing but the returned
    /// array, and an image's outputs are the same bits whatever batch it comes in and
    /// whatever the thread count.
    pub fn forward(&self, batch: ArrayView4<'_, f32>) -> Result<Array2<f32>> {
        let (n, c, h, w) = batch.dim();
        if [c, h, w] != [self.input.channels, self.input.height, self.input.width] {
            return Err(Error::Model(format!(
                "input is {c}x{h}x{w}, the model takes {}x{}x{}",
                self.input.channels, self.input.height, self.input.width
            )));
        }
        let together = self.images_together(n);
        let at_once = n.min(self.threads.count() * together).max(1) as u64;
        // A thread with a group holds a whole-pass arena and a group arena per image.
        let per_thread = match (&self.group, together) {
            (Some(plan), 2..) => (4 * plan.len as u64)
                .saturating_mul(together as u64)
                .saturating_add(self.arena_bytes_per_image),
            _ => self.arena_bytes_per_image,
        };
        let threads = at_once.div_ceil(together as u64);
        self.budget.check(
            || format!("{at_once} images' activations at once"),
            per_thread.saturating_mul(threads),
        )?;
        let classes = self.num_classes();
        let mut out = Array2::<f32>::zeros((n, classes));
        let rows = out.as_slice_mut().expect("a fresh array is contiguous");
        let work = self.work_per_image.saturating_mul(n);
        if n == 1 {
            self.threads.run(work, || {
                self.forward_image(batch.index_axis(ndarray::Axis(0), 0), rows)
            });
        } else if n > 1 {
            let groups = rows.chunks_mut(together * classes);
            let work_per_group = self.work_per_image.saturating_mul(together);
            self.threads.run_pass(parallel::Pass::Images, work, || {
                parallel::each(groups, work_per_group, &|g, rows| {
                    let first = g * together;
                    let images: Group<_> = (first..first + rows.len() / classes)
                        .map(|i| batch.index_axis(ndarray::Axis(0), i))
                        .collect();
                    self.forward_images(&images, rows)
                })
            });
        }
        Ok(out)
    }

    /// How many images of a batch of `n` one thread runs through the layers together
    /// ([`Model::forward_images`]): the batch shared among the threads, at most
    /// [`MOST_IMAGES_TOGETHER`] and [`GROUP_ARENA_BYTES`] of arenas; one where no layer runs
    /// images together.
    fn images_together(&self, n: usize) -> usize {
        let Some(plan) = &self.group else {
            return 1;
        };
        let per_thread = n.div_ceil(self.threads.count().max(1));
        let by_memory = GROUP_ARENA_BYTES / (4 * plan.len as u64).max(1);
        per_thread
            .min(MOST_IMAGES_TOGETHER)
            .min(usize::try_from(by_memory).unwrap_or(usize::MAX))
            .max(1)
    }

    /// Whether layer `i` runs a group's images as one product ([`ops::pointwise_images`]): a
    /// 1×1 convolution over at most [`TOGETHER_MOST_PIXELS`].
    fn runs_images_together(&self, i: usize) -> bool {
        runs_images_together(&self.layers[i], &self.shapes[i], self.in_place[i])
    }

    /// Several images through the graph, their outputs written into `out` one after another:
    /// each alone up to the first layer that runs them together ([`GroupPlan`]), then the
    /// group a layer at a time, each image in a group arena of its own. The small 1×1
    /// convolutions take all the images' pixels in one product, so each tile of weights is
    /// read from memory once for the group (Xception's 728×728 middle flow took 0.99 against
    /// 1.04 ms an image eight at a time, its 2048×1536 layer at 5×5 2.0 against 2.5); every
    /// other layer runs on each image in turn, as in [`Model::forward_image`], with the same
    /// bits.
    fn forward_images(&self, images: &[ArrayView3<'_, f32>], out: &mut [f32]) {
        let (Some(plan), [_, _, ..]) = (&self.group, images) else {
            let rows = out.chunks_exact_mut(self.num_classes());
            for (image, row) in images.iter().zip(rows) {
                self.forward_image(image.view(), row);
            }
            return;
        };
        // Up to the first layer that runs them together, each image runs alone in one arena,
        // its activations in cache from one layer to the next; then what the rest of the
        // pass reads moves to the image's group arena.
        let mut alone = self.take_arena();
        let mut buffers: Group<Vec<f32>> = images.iter().map(|_| self.take_group_arena()).collect();
        let mut arenas: Group<&mut [f32]> = buffers
            .iter_mut()
            .map(|b| aligned_arena(b, plan.len))
            .collect();
        let mut inputs: Group<Option<&[f32]>> = Group::new();
        for (image, group_arena) in images.iter().zip(&mut arenas) {
            let arena = aligned_arena(&mut alone, self.arena_len);
            let input = self.place_input(image.view(), arena);
            for i in 0..plan.first {
                self.run_layer(i, arena, input, &self.slots);
            }
            for (value, from, to) in &plan.carried {
                // The input stays where the caller holds it when the pass reads it there.
                if *value > 0 || input.is_none() {
                    group_arena[to.clone()].copy_from_slice(&arena[from.clone()]);
                }
            }
            inputs.push(input);
        }
        self.give_arena(alone);
        for i in plan.first..self.layers.len() {
            if self.runs_images_together(i) {
                self.run_layer_on_images(i, &mut arenas, &inputs, &plan.slots);
            } else {
                for (arena, input) in arenas.iter_mut().zip(&inputs) {
                    self.run_layer(i, arena, *input, &plan.slots);
                }
            }
        }
        let last = &plan.slots[self.layers.len()];
        for (arena, row) in arenas.iter().zip(out.chunks_exact_mut(last.len())) {
            row.copy_from_slice(&arena[last.clone()]);
        }
        drop(arenas);
        if let Ok(mut free) = self.group_arenas.lock() {
            free.extend(buffers);
        }
    }

    /// A group arena's buffer ([`GroupPlan`]) from the model's pool, or a new one.
    fn take_group_arena(&self) -> Vec<f32> {
        let len = self.group.as_ref().map_or(0, |g| g.len);
        take_buffer(&self.group_arenas, len + scratch::LINE_VALUES)
    }

    /// Layer `i`, a 1×1 convolution ([`Model::runs_images_together`]), on every image of a
    /// group at once: each arena's operands, then one [`ops::pointwise_images`].
    fn run_layer_on_images(
        &self,
        i: usize,
        arenas: &mut [&mut [f32]],
        inputs: &[Option<&[f32]>],
        slots: &[Range<usize>],
    ) {
        let layer = &self.layers[i];
        let Op::Conv {
            weight,
            bias,
            activation,
            residual,
            ..
        } = &layer.op
        else {
            unreachable!("a convolution (runs_images_together)")
        };
        let place = slots[i + 1].clone();
        let (mut xs, mut residuals, mut outs) = (Group::new(), Group::new(), Group::new());
        for (arena, input) in arenas.iter_mut().zip(inputs) {
            let (before, rest) = arena.split_at_mut(place.start);
            let (out, after) = rest.split_at_mut(place.len());
            let (before, after) = (&*before, &*after);
            let value =
                |k: usize| value_beside(slots, layer.inputs[k], &place, (before, after), *input);
            xs.push(value(0));
            residuals.push(residual.then(|| value(1)));
            outs.push(out);
        }
        ops::pointwise_images(
            &xs,
            weight,
            bias.as_deref(),
            *activation,
            &residuals,
            &mut outs,
        );
    }

    /// Runs one image through the graph, as [`Model::forward`] does, timing each layer: the
    /// seconds each layer took, in graph order (one per [`Model::layer_info`] entry). The pass
    /// runs on the model's threads, so each time is the layer's wall time with every thread
    /// the model would use.
    pub fn profile(&self, image: ArrayView3<'_, f32>) -> Result<Vec<f64>> {
        let shape = [self.input.channels, self.input.height, self.input.width];
        if image.dim() != (shape[0], shape[1], shape[2]) {
            return Err(Error::Model(format!(
                "input is {:?}, the model takes {}x{}x{}",
                image.dim(),
                shape[0],
                shape[1],
                shape[2]
            )));
        }
        self.budget.check(
            || "one image's activations".to_string(),
            self.arena_bytes_per_image,
        )?;
        // An arena from the pool, as a pass takes: a fresh one would time each layer's first
        // touch of its pages (the allocator maps large blocks anew, `cxrm`'s process setup).
        let mut buffer = self.take_arena();
        let arena = aligned_arena(&mut buffer, self.arena_len);
        let input = self.place_input(image, arena);
        let mut times = Vec::with_capacity(self.layers.len());
        self.threads.run(self.work_per_image, || {
            for i in 0..self.layers.len() {
                let start = std::time::Instant::now();
                self.run_layer(i, arena, input, &self.slots);
                times.push(start.elapsed().as_secs_f64());
            }
        });
        self.give_arena(buffer);
        Ok(times)
    }

    /// An arena's buffer from the model's pool, or a new one when every arena is in use by
    /// another image: room for the arena from its buffer's first cache line boundary
    /// ([`aligned_arena`]).
    fn take_arena(&self) -> Vec<f32> {
        take_buffer(&self.arenas, self.arena_len + scratch::LINE_VALUES)
    }

    fn give_arena(&self, arena: Vec<f32>) {
        if let Ok(mut free) = self.arenas.lock() {
            free.push(arena);
        }
    }

    /// One image through the graph, in an arena from the model's pool (a new one when every
    /// arena is in use by another image), its output written into `out`.
    fn forward_image(&self, image: ArrayView3<'_, f32>, out: &mut [f32]) {
        let mut buffer = self.take_arena();
        let arena = aligned_arena(&mut buffer, self.arena_len);
        let input = self.place_input(image, arena);
        for i in 0..self.layers.len() {
            self.run_layer(i, arena, input, &self.slots);
        }
        out.copy_from_slice(&arena[self.slots[self.layers.len()].clone()]);
        self.give_arena(buffer);
    }

    /// Where a pass reads the input: the image's own values where they lie contiguously and
    /// no layer writes over them ([`Model::reads_input_in_place`]), else a copy in its arena
    /// slot. The copy (`memmove`) was 1.7% of MobileNetV2's pass at one thread (perf); without
    /// it, the first layer's im2col reads the image from further away, and the two together
    /// went from 2.6% to 2.1%.
    fn place_input<'i>(&self, image: ArrayView3<'i, f32>, arena: &mut [f32]) -> Option<&'i [f32]> {
        let contiguous = image.to_slice();
        if self.reads_input_in_place && contiguous.is_some() {
            return contiguous;
        }
        let input = &mut arena[self.slots[0].clone()];
        match contiguous {
            Some(values) => input.copy_from_slice(values),
            None => input
                .iter_mut()
                .zip(image.iter())
                .for_each(|(d, s)| *d = *s),
        }
        None
    }

    /// The shape of a layer's input (without the batch dimension).
    fn shape_of(&self, source: Source) -> &[usize] {
        match source {
            Source::Input => &self.input_shape,
            Source::Node(j) => &self.shapes[j],
        }
    }

    /// Probabilities per class: the output itself when the graph ends in softmax, else the
    /// softmax of the logits.
    pub fn predict(&self, batch: ArrayView4<'_, f32>) -> Result<Array2<f32>> {
        let mut out = self.forward(batch)?;
        if !self.ends_in_softmax() {
            ops::softmax(&mut out);
        }
        Ok(out)
    }

    /// Runs layer `i`, reading its inputs from their places in `arena` (the model's input
    /// from `input`, where the pass reads it where the caller holds it) and writing its output
    /// into its own place (which is an input's, for a layer that runs in place).
    fn run_layer(
        &self,
        i: usize,
        arena: &mut [f32],
        input: Option<&[f32]>,
        slots: &[Range<usize>],
    ) {
        let layer = &self.layers[i];
        let place = slots[i + 1].clone();
        let (before, rest) = arena.split_at_mut(place.start);
        let (out, after) = rest.split_at_mut(place.len());
        let (before, after) = (&*before, &*after);
        let in_place = self.in_place[i].map(|k| layer.inputs[k]);
        let operand = |k: usize| -> Operand<'_> {
            let source = layer.inputs[k];
            if Some(source) == in_place {
                return Operand::Out;
            }
            Operand::Values(value_beside(slots, source, &place, (before, after), input))
        };
        let values = |k: usize| match operand(k) {
            Operand::Values(v) => v,
            Operand::Out => unreachable!("only element-wise layers run in place"),
        };
        let image = |k: usize| image_view(values(k), self.shape_of(layer.inputs[k]));
        // The rows an element-wise layer may be split in: the output's planes.
        let row_len = self.shapes[i].iter().skip(1).product::<usize>();
        let vector = |k: usize| {
            let v = values(k);
            ArrayView2::from_shape((1, v.len()), v).expect("a vector")
        };
        match &layer.op {
            Op::Conv {
                weight,
                bias,
                params,
                activation,
                residual,
            } => {
                let residual = residual.then(|| values(1));
                let bias = bias.as_deref();
                ops::conv2d_plus_into(image(0), weight, bias, params, *activation, residual, out)
            }
            Op::Dense { weight, bias } => ops::dense_into(vector(0), weight, bias.as_deref(), out),
            Op::ConvChain { steps, bias } => run_chain(image(0), steps, bias.as_deref(), out),
            Op::XnorConv {
                weight,
                bias,
                params,
                input,
            } => xnor::conv2d_into(image(0), weight, bias.as_deref(), params, input, out),
            Op::XnorDense {
                weight,
                bias,
                input,
            } => xnor::dense_into(vector(0), weight, bias.as_deref(), input, out),
            Op::MaxPool(p) => ops::pool2d_into(image(0), p, true, out),
            Op::AvgPool(p) => ops::pool2d_into(image(0), p, false, out),
            Op::GlobalAvgPool => ops::global_avg_pool_into(image(0), out),
            Op::Pad(padding) => ops::pad_into(image(0), *padding, out),
            Op::Concat => {
                // One image's inputs, each `[c_k, …]`, lie one after the other along axis 1.
                let mut at = 0;
                for k in 0..layer.inputs.len() {
                    let v = values(k);
                    out[at..at + v.len()].copy_from_slice(v);
                    at += v.len();
                }
            }
            Op::Add => {
                let rows = (None, row_len);
                ops::binary_into(out, operand(0), operand(1), rows, |a, b| a + b)
            }
            Op::Mul => {
                let (a, b) = (
                    self.shape_of(layer.inputs[0]),
                    self.shape_of(layer.inputs[1]),
                );
                // Shapes that differ are `[C, H, W]` times one scale per channel.
                let plane = (a != b).then(|| a[1..].iter().product());
                ops::binary_into(out, operand(0), operand(1), (plane, row_len), |a, b| a * b)
            }
            Op::Relu | Op::Relu6 | Op::Sigmoid | Op::HardSwish => {
                // Value by value from the input straight into the output (or in place), split
                // over the threads as an add is.
                let x = operand(0);
                ops::split_elements(out, row_len, &|at, part| {
                    let x = match x {
                        Operand::Values(x) => Some(&x[at..at + part.len()]),
                        Operand::Out => None,
                    };
                    map_values(&layer.op, x, part)
                });
            }
            Op::BatchNorm { .. }
            | Op::Softmax
            | Op::Flatten
            | Op::Sign { .. }
            | Op::Identity(_) => {
                // Element by element, over the input's values where the layer runs in place,
                // else over a copy of them: the same operations either way.
                if let Operand::Values(x) = operand(0) {
                    out.copy_from_slice(x);
                }
                element_wise(&layer.op, out);
            }
        }
    }
}

/// A layer that maps values one by one, from `x` into `out`, or over `out` in place where
/// `x` is `None`: the one definition of each map, whichever way the layer runs.
fn map_values(op: &Op<'_>, x: Option<&[f32]>, out: &mut [f32]) {
    fn apply(x: Option<&[f32]>, out: &mut [f32], f: impl Fn(f32) -> f32) {
        match x {
            Some(x) => out.iter_mut().zip(x).for_each(|(o, &v)| *o = f(v)),
            None => out.iter_mut().for_each(|v| *v = f(*v)),
        }
    }
    match op {
        Op::Relu => apply(x, out, |v| v.max(0.0)),
        Op::Relu6 => apply(x, out, |v| v.clamp(0.0, 6.0)),
        Op::Sigmoid => apply(x, out, ops::sigmoid),
        Op::HardSwish => apply(x, out, ops::hard_swish),
        _ => unreachable!("not a value-by-value layer"),
    }
}

/// A layer that maps values one by one (or a softmax, row by row), applied to `x` in place.
/// A flatten and an identity keep the values as they lie.
fn element_wise(op: &Op<'_>, x: &mut [f32]) {
    match op {
        Op::Relu | Op::Relu6 | Op::Sigmoid | Op::HardSwish => map_values(op, None, x),
        Op::BatchNorm { scale, shift } => {
            let plane = x.len() / scale.len().max(1);
            for ((channel, s), b) in x.chunks_exact_mut(plane.max(1)).zip(scale).zip(shift) {
                channel.iter_mut().for_each(|v| *v = *v * s + b);
            }
        }
        Op::Softmax => {
            let len = x.len();
            ops::softmax_rows(ArrayViewMut2::from_shape((1, len), x).expect("a vector"))
        }
        Op::Sign { threshold } => crate::signs::sign_in_place(x, threshold.as_deref()),
        Op::Flatten | Op::Identity(_) => {}
        _ => unreachable!("not an element-wise layer"),
    }
}

/// One image's values of shape `[C, H, W]` as a batch of one.
fn image_view<'v>(values: &'v [f32], shape: &[usize]) -> ArrayView4<'v, f32> {
    let [c, h, w] = shape[..] else {
        unreachable!("shape checked at load")
    };
    ArrayView4::from_shape((1, c, h, w), values).expect("a value of its planned size")
}

/// A Tucker-2 layer's three convolutions, the two intermediates in scratch buffers.
fn run_chain(
    x: ArrayView4<'_, f32>,
    steps: &[(Matrix<'_>, Conv2dParams)],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let (n, mut c, mut h, mut w) = x.dim();
    let last = steps.len() - 1;
    let (mut input, mut next) = (scratch::take::<f32>(), scratch::take::<f32>());
    for (s, (m, p)) in steps.iter().enumerate() {
        let from = if s == 0 {
            x
        } else {
            ArrayView4::from_shape((n, c, h, w), &input[..]).expect("the step's input")
        };
        let (oh, ow) = p.output_size(h, w).expect("checked at load");
        if s == last {
            ops::conv2d_into(from, m, bias, p, Activation::None, out);
        } else {
            next.resize(n * m.rows() * oh * ow, 0.0);
            ops::conv2d_into(from, m, None, p, Activation::None, &mut next);
            std::mem::swap(&mut input, &mut next);
        }
        (c, h, w) = (m.rows(), oh, ow);
    }
    scratch::give(input);
    scratch::give(next);
}

/// How long memory that both threads have touched is not written again
/// ([`placement_lifetimes`]): until the layers after have touched this many bytes (weights,
/// inputs and outputs). On the Zen 4 VM at two threads, 8 MiB kept MobileNetV2's 14×14
/// depthwise layers off such memory (about four of its blocks) while Xception's middle flow,
/// whose 2 MiB of weights a layer take the memory out of the caches sooner, kept reusing what
/// it had just touched; a window counted in layers could not do both (docs/performance.md,
/// Threads).
const SHARED_WINDOW_BYTES: u64 = 8 << 20;

/// Values longer than this (in `f32`s, 1 MiB: a Zen 4 core's L2) are not kept apart: keeping
/// MobileNetV2's and Xception's larger ones apart too would have made their arenas 1.6–1.7
/// times as long.
const SHARED_MOST_LEN: usize = 1 << 18;

/// How a split layer's threads divide the memory of a value it writes or reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Division {
    /// Each thread its own channels' planes: one contiguous part of the value.
    Planes,
    /// Each thread the same pixels of every plane (a product split by columns).
    Pixels,
    /// Every thread all of it (a product split by rows reads all its input).
    Whole,
}

/// How `layer` (its output `shape`) divides its output and its inputs over the threads, for
/// the layers whose division is known here: 1×1 and depthwise convolutions.
fn divisions(layer: &Layer<'_>, shape: &[usize]) -> Option<(Division, Division)> {
    let Op::Conv { weight, params, .. } = &layer.op else {
        return None;
    };
    let plane = shape.iter().skip(1).product::<usize>();
    let [kh, kw] = params.kernel;
    if params.is_pointwise() {
        Some(match ops::splits_by_rows(weight, plane) {
            true => (Division::Planes, Division::Whole),
            false => (Division::Pixels, Division::Pixels),
        })
    } else if params.groups > 1 && weight.rows() == params.groups && weight.cols() == kh * kw {
        Some((Division::Planes, Division::Planes))
    } else {
        None
    }
}

/// The lifetimes the arena is placed by. At more than one thread, a value that both threads
/// touch is placed as if it lived until the layers after it have touched
/// [`SHARED_WINDOW_BYTES`], so that no value written soon after takes its memory: each core
/// then holds a copy of its cache lines, and a store to a line another core holds waits for
/// that core to drop it. Both touch a value where a layer reads it divided otherwise than the
/// layer that wrote it ([`Division`]): all of it on each thread (a 1×1 convolution split by
/// rows), or the same pixels of every plane after each thread wrote its own planes, or the
/// reverse (a 1×1 convolution split by columns between depthwise layers). On MobileNetV2 at
/// two threads, the 14×14 depthwise layers that wrote where the last block's projection had
/// just read took 24.4 µs a half against 16.9 where they did not; zeroing a half's output
/// first took 16 µs against 2 (docs/performance.md, Threads). The activations' peak is
/// unchanged, and the arena is placed by these lifetimes only where that leaves its length as
/// it was.
fn placement_lifetimes(
    layers: &[Layer<'_>],
    shapes: &[Vec<usize>],
    storage: &[usize],
    lifetimes: &[Lifetime],
    threads: usize,
) -> Vec<Lifetime> {
    let mut placed = lifetimes.to_vec();
    if threads < 2 {
        return placed;
    }
    let mut written: Vec<Option<Division>> = vec![None; lifetimes.len()];
    let mut shared = vec![false; lifetimes.len()];
    for (i, (layer, shape)) in layers.iter().zip(shapes).enumerate() {
        let Some((output, input)) = divisions(layer, shape) else {
            continue;
        };
        for (k, source) in layer.inputs.iter().enumerate() {
            let at = storage[value_index(*source)];
            // A second input is a residual, added where the output is written.
            let read = if k == 0 { input } else { output };
            shared[at] |= read == Division::Whole || written[at].is_some_and(|w| w != read);
        }
        written[storage[i + 1]] = Some(output);
    }
    let touched = bytes_touched(layers, storage, lifetimes);
    for (held, shared) in placed.iter_mut().zip(shared) {
        if shared && held.len <= SHARED_MOST_LEN {
            let last = held.last.min(layers.len());
            let until = touched[last].saturating_add(SHARED_WINDOW_BYTES);
            let step = touched.partition_point(|&t| t < until).min(layers.len());
            held.last = held.last.max(step);
        }
    }
    placed
}

/// The bytes a pass has touched by the end of each step (layer `i` is step `i + 1`; step 0
/// touches none): each layer's weights, inputs and output; a layer folded into another
/// touches none.
fn bytes_touched(layers: &[Layer<'_>], storage: &[usize], lifetimes: &[Lifetime]) -> Vec<u64> {
    let mut touched = vec![0u64; layers.len() + 1];
    for (i, layer) in layers.iter().enumerate() {
        let mut bytes = 0u64;
        if !matches!(layer.op, Op::Identity(_)) {
            let mut weights = WeightBytes::default();
            layer.op.add_weight_bytes(&mut weights);
            let inputs = layer
                .inputs
                .iter()
                .map(|s| lifetimes[storage[value_index(*s)]].len);
            let elements = inputs.sum::<usize>() + lifetimes[storage[i + 1]].len;
            bytes = weights.mapped + weights.owned + 4 * elements as u64;
        }
        touched[i + 1] = touched[i].saturating_add(bytes);
    }
    touched
}

/// A source's index among a pass's values: the input is value 0, layer `i`'s output `i + 1`.
/// Whether `layer` (its output `shape`, `in_place` its input run over) runs a group's images
/// as one product: a 1×1 convolution over at most [`TOGETHER_MOST_PIXELS`].
fn runs_images_together(layer: &Layer<'_>, shape: &[usize], in_place: Option<usize>) -> bool {
    let pixels: usize = shape.iter().skip(1).product();
    match &layer.op {
        Op::Conv { weight, params, .. } => {
            pixels <= TOGETHER_MOST_PIXELS
                && in_place.is_none()
                && ops::runs_images_together(weight, params)
        }
        _ => false,
    }
}

/// Where a group's images keep their values from the first layer they run together
/// ([`Model::forward_images`]): arenas of their own, planned at load for that part of the
/// graph only, so that a group holds one whole-pass arena (for each image's layers before,
/// in turn) and a small one per image, not a whole-pass arena per image (Xception's is 6.6
/// MB, the part from its middle flow on much less).
struct GroupPlan {
    /// The first layer that runs a group's images together.
    first: usize,
    /// Each value's place in a group arena (those alive from `first` on).
    slots: Vec<Range<usize>>,
    /// What each image brings from its pass through the layers before `first`: a value
    /// (0 for the input) and where it lies in the whole-pass arena and in the group arena.
    carried: Vec<(usize, Range<usize>, Range<usize>)>,
    /// The `f32`s of a group arena.
    len: usize,
}

impl GroupPlan {
    /// The plan for a graph whose first layer to run images together is `first`: every
    /// lifetime that reaches that layer's step, those begun before it starting just before
    /// it, when they are carried over; `storage` maps each value to the lifetime that holds
    /// it, `lens` gives each value's length, `whole` is the whole-pass placement.
    fn new(
        first: usize,
        lifetimes: &[Lifetime],
        storage: &[usize],
        lens: &[usize],
        whole: &arena::Placement,
    ) -> GroupPlan {
        let step = first + 1;
        let reaches = |l: &Lifetime| l.len > 0 && l.last >= step;
        let clipped: Vec<Lifetime> = lifetimes
            .iter()
            .map(|l| match reaches(l) {
                true => Lifetime {
                    first: l.first.max(step - 1),
                    ..*l
                },
                false => Lifetime {
                    len: 0,
                    last: l.first,
                    ..*l
                },
            })
            .collect();
        let placement = arena::place(&clipped);
        let slots = storage
            .iter()
            .zip(lens)
            .map(|(&at, &len)| placement.range(at, len))
            .collect();
        let carried = lifetimes
            .iter()
            .enumerate()
            .filter(|(_, l)| reaches(l) && l.first < step)
            .map(|(t, l)| (t, whole.range(t, l.len), placement.range(t, l.len)))
            .collect();
        GroupPlan {
            first,
            slots,
            carried,
            len: placement.len,
        }
    }
}

/// Where `source` lies for a layer whose output takes `place` of an arena whose values lie
/// at `slots`, split around it into `before` and `after`: the caller's input where the pass
/// reads it in place, else its slot. (The planner keeps every input of a layer apart from its
/// output.)
fn value_beside<'v>(
    slots: &[Range<usize>],
    source: Source,
    place: &Range<usize>,
    (before, after): (&'v [f32], &'v [f32]),
    input: Option<&'v [f32]>,
) -> &'v [f32] {
    if let (Source::Input, Some(values)) = (source, input) {
        return values;
    }
    let r = &slots[value_index(source)];
    if r.start >= place.end {
        &after[r.start - place.end..r.end - place.end]
    } else {
        &before[r.clone()]
    }
}

/// A buffer of at least `len` values from `pool`, or a new one when the pool has none.
fn take_buffer(pool: &Mutex<Vec<Vec<f32>>>, len: usize) -> Vec<f32> {
    let mut buffer = pool
        .lock()
        .ok()
        .and_then(|mut free| free.pop())
        .unwrap_or_default();
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    buffer
}

/// The `len` values of an arena from the first cache line boundary of its `buffer`
/// ([`scratch::line_aligned`]). The planner places every value a whole number of lines from
/// the arena's start, so each then starts on a line of its own: without it every 64-byte
/// AVX-512 load of a whole vector of activations straddles two lines (that CPU was not at
/// hand to measure it); the AVX2 passes of Xception and MobileNetV2 on Zen 3 measured level
/// either way.
fn aligned_arena(buffer: &mut [f32], len: usize) -> &mut [f32] {
    scratch::line_aligned(buffer, len)
}

fn value_index(source: Source) -> usize {
    match source {
        Source::Input => 0,
        Source::Node(j) => j + 1,
    }
}

/// The last layer that reads the input.
fn input_last_use(layers: &[Layer<'_>]) -> usize {
    layers
        .iter()
        .rposition(|l| l.inputs.contains(&Source::Input))
        .unwrap_or(0)
}

/// For each layer that can write its output over one of its inputs, which input: a layer
/// that maps values one by one (a flatten or an identity keeps them as they lie) over an input
/// of the output's shape that no later layer reads. Running in place saves the output's
/// memory and, for a flatten or an identity, the copy.
fn in_place_inputs(
    layers: &[Layer<'_>],
    input_shape: &[usize],
    shapes: &[Vec<usize>],
    last_use: &[usize],
) -> Vec<Option<usize>> {
    let input_last = input_last_use(layers);
    layers
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            let candidates: &[usize] = match layer.op {
                Op::Relu
                | Op::Relu6
                | Op::Sigmoid
                | Op::HardSwish
                | Op::BatchNorm { .. }
                | Op::Softmax
                | Op::Flatten
                | Op::Sign { .. }
                | Op::Identity(_) => &[0],
                Op::Add | Op::Mul => &[0, 1],
                _ => &[],
            };
            candidates.iter().copied().find(|&k| {
                let (last, shape) = match layer.inputs[k] {
                    Source::Input => (input_last, input_shape),
                    Source::Node(j) => (last_use[j], &shapes[j][..]),
                };
                // A flatten changes the shape, not the values' order.
                let fits = if matches!(layer.op, Op::Flatten) {
                    elements(shape) == elements(&shapes[i])
                } else {
                    shape == &shapes[i][..]
                };
                last == i && fits
            })
        })
        .collect()
}

/// Each value's size and steps (step 0 copies the input in, step `i + 1` runs layer `i`), and
/// the value whose memory holds it: its own, or for a layer that runs in place, its input's.
/// A value and the layers that run in place over it make one lifetime, from the first write
/// to the last read; the others get an empty one.
fn value_lifetimes(
    input_shape: &[usize],
    shapes: &[Vec<usize>],
    layers: &[Layer<'_>],
    last_use: &[usize],
    in_place: &[Option<usize>],
) -> (Vec<Lifetime>, Vec<usize>) {
    let mut lifetimes = vec![Lifetime {
        len: elements(input_shape) as usize,
        first: 0,
        last: input_last_use(layers) + 1,
    }];
    let mut storage = vec![0];
    for (i, (layer, shape)) in layers.iter().zip(shapes).enumerate() {
        let own = Lifetime {
            len: elements(shape) as usize,
            first: i + 1,
            last: last_use[i] + 1,
        };
        match in_place[i] {
            Some(k) => {
                let at = storage[value_index(layer.inputs[k])];
                let held = &mut lifetimes[at];
                held.last = held.last.max(own.last);
                held.len = held.len.max(own.len);
                lifetimes.push(Lifetime { len: 0, ..own });
                storage.push(at);
            }
            None => {
                lifetimes.push(own);
                storage.push(i + 1);
            }
        }
    }
    (lifetimes, storage)
}

fn build_op<'a>(
    loader: &Loader<'_, 'a>,
    node: &Node,
    ins: &[&Vec<usize>],
) -> Result<(Op<'a>, Vec<usize>)> {
    let fail = |what: String| Error::Model(format!("node {} ({}): {what}", node.name, node.op));
    let arity = |n: std::ops::RangeInclusive<usize>| {
        if n.contains(&ins.len()) {
            Ok(())
        } else if n.start() == n.end() {
            Err(fail(format!(
                "takes {} input(s), has {}",
                n.start(),
                ins.len()
            )))
        } else {
            Err(fail(format!(
                "takes at least {} inputs, has {}",
                n.start(),
                ins.len()
            )))
        }
    };
    let image = |s: &Vec<usize>| -> Result<(usize, usize, usize)> {
        match s[..] {
            [c, h, w] => Ok((c, h, w)),
            _ => Err(fail(format!("needs a C×H×W input, got shape {s:?}"))),
        }
    };
    let op = format::Op::parse(node)?;
    arity(op.arity())?;
    Ok(match op {
        format::Op::Conv2d(conv) | format::Op::XnorConv2d(conv) => {
            let (c, h, w) = image(ins[0])?;
            let name = node
                .weights
                .first()
                .ok_or_else(|| fail("needs a weight tensor".into()))?;
            // A convolution's product is a blocked GEMM, which the CSR kernel beats only when
            // fewer weights are left than for a matrix-vector product; an XNOR layer's float
            // fallback is a matrix-vector product per position.
            let pixels = (h / conv.stride[0].max(1)) * (w / conv.stride[1].max(1));
            let params_with = |kernel: [usize; 2]| Conv2dParams {
                kernel,
                stride: conv.stride,
                padding: conv.padding,
                dilation: conv.dilation,
                groups: conv.groups,
            };
            // Layers that run by Winograd's F(4×4, 3×3) stay dense: told from the stored
            // shape, before the weight is decoded.
            let winograd = match loader.record(node, name)?.shape[..] {
                [cout, cin, kh, kw] => {
                    let p = params_with([kh as usize, kw as usize]);
                    loader.options.winograd && winograd::suits(&p, cin as usize, cout as usize)
                }
                _ => false,
            };
            let sparse_below = if matches!(op, format::Op::XnorConv2d(_)) {
                loader.options.sparse_below_density
            } else if pixels >= CONV_SPARSE_MIN_PIXELS
                && !winograd
                && kernels::sparse_in_registers()
            {
                loader.options.sparse_below_density * CONV_SPARSE_FACTOR
            } else if pixels >= CONV_SPARSE_MID_PIXELS
                && !winograd
                && kernels::sparse_in_registers()
            {
                loader.options.sparse_below_density * MID_CONV_SPARSE_FACTOR
            } else {
                loader.options.sparse_below_density * SMALL_CONV_SPARSE_FACTOR
            };
            let (loaded, shape) = loader.weight(node, name, sparse_below)?;
            let [cout, cg, kh, kw] = shape[..] else {
                return Err(fail(format!(
                    "weight {name:?} must be [out, in/groups, kh, kw], found {shape:?}"
                )));
            };
            let groups = conv.groups;
            if cg * groups != c || cout % groups != 0 {
                return Err(fail(format!(
                    "input has {c} channels, weight {name:?} {shape:?} with groups {groups} expects {}",
                    cg * groups
                )));
            }
            let params = params_with([kh, kw]);
            let (oh, ow) = params
                .output_size(h, w)
                .ok_or_else(|| fail(format!("a {kh}x{kw} kernel does not fit a {h}x{w} input")))?;
            let bias = loader.bias(node, 1, cout)?;
            let cols = cg * kh * kw;
            let op = if matches!(op, format::Op::XnorConv2d(_)) {
                if groups != 1 {
                    return Err(fail(format!(
                        "XNOR convolutions take groups 1, not {groups}"
                    )));
                }
                Op::XnorConv {
                    weight: loader.xnor_weight(loaded, cout, cols, Some(c)),
                    bias,
                    params,
                    input: SignInput::Scaled,
                }
            } else {
                match loaded {
                    Loaded::Factored(Factored::Tucker(t)) if groups == 1 => Op::ConvChain {
                        steps: tucker_steps(&t, params),
                        bias,
                    },
                    loaded => {
                        let mut weight = loader.weight_matrix(loaded, cout, cols, sparse_below);
                        if groups == c && cout == c {
                            // The depthwise kernel is direct; it takes its few weights dense,
                            // and as a copy of its own: read in place, they would keep resident
                            // the file pages around them, mostly weights folded into copies (a
                            // fault maps a whole page-cache folio, up to 2 MB).
                            weight = loader.owned(weight.into_dense());
                        }
                        Op::Conv {
                            weight,
                            bias,
                            params,
                            activation: Activation::None,
                            residual: false,
                        }
                    }
                }
            };
            (op, vec![cout, oh, ow])
        }
        format::Op::Dense | format::Op::XnorDense => {
            let [n] = ins[0][..] else {
                return Err(fail(format!(
                    "needs a flat input (add a flatten node), got shape {:?}",
                    ins[0]
                )));
            };
            let name = node
                .weights
                .first()
                .ok_or_else(|| fail("needs a weight tensor".into()))?;
            let sparse_below = loader.options.sparse_below_density;
            let (loaded, shape) = loader.weight(node, name, sparse_below)?;
            let [out, inp] = shape[..] else {
                return Err(fail(format!(
                    "weight {name:?} must be [out, in], found {shape:?}"
                )));
            };
            if inp != n {
                return Err(fail(format!(
                    "input has {n} features, weight {name:?} expects {inp}"
                )));
            }
            let bias = loader.bias(node, 1, out)?;
            let op = if op == format::Op::XnorDense {
                Op::XnorDense {
                    weight: loader.xnor_weight(loaded, out, inp, None),
                    bias,
                    input: SignInput::Scaled,
                }
            } else {
                Op::Dense {
                    weight: loader.weight_matrix(loaded, out, inp, sparse_below),
                    bias,
                }
            };
            (op, vec![out])
        }
        format::Op::BatchNorm { epsilon } => {
            let c = ins[0]
                .first()
                .copied()
                .ok_or_else(|| fail("needs an input with channels".into()))?;
            if node.weights.len() != 4 {
                return Err(fail("needs gamma, beta, mean and var".into()));
            }
            let mut t = Vec::new();
            for name in &node.weights {
                let (v, _) = loader.tensor(node, name)?;
                if v.len() != c {
                    return Err(fail(format!(
                        "{name:?} has {} values for {c} channels",
                        v.len()
                    )));
                }
                t.push(v);
            }
            let eps = epsilon as f32;
            let scale: Vec<f32> = t[0]
                .iter()
                .zip(t[3].iter())
                .map(|(g, v)| g / (v + eps).sqrt())
                .collect();
            let shift: Vec<f32> = t[1]
                .iter()
                .zip(t[2].iter())
                .zip(&scale)
                .map(|((b, m), s)| b - m * s)
                .collect();
            t.iter().for_each(|v| loader.release(v));
            (Op::BatchNorm { scale, shift }, ins[0].clone())
        }
        format::Op::Relu => (Op::Relu, ins[0].clone()),
        format::Op::Relu6 => (Op::Relu6, ins[0].clone()),
        format::Op::Softmax => {
            if ins[0].len() != 1 {
                return Err(fail(format!(
                    "softmax takes a vector per image, got shape {:?}",
                    ins[0]
                )));
            }
            (Op::Softmax, ins[0].clone())
        }
        format::Op::Flatten => (Op::Flatten, vec![ins[0].iter().product()]),
        format::Op::MaxPool2d(pool) | format::Op::AvgPool2d(pool) => {
            let (c, h, w) = image(ins[0])?;
            let kernel = pool.kernel;
            let p = PoolParams {
                kernel,
                stride: pool.stride,
                padding: pool.padding,
            };
            let (oh, ow) = p.output_size(h, w).ok_or_else(|| {
                fail(format!(
                    "a {}x{} window does not fit a {h}x{w} input",
                    kernel[0], kernel[1]
                ))
            })?;
            (
                if matches!(op, format::Op::MaxPool2d(_)) {
                    Op::MaxPool(p)
                } else {
                    Op::AvgPool(p)
                },
                vec![c, oh, ow],
            )
        }
        format::Op::GlobalAvgPool => {
            let (c, _, _) = image(ins[0])?;
            (Op::GlobalAvgPool, vec![c])
        }
        format::Op::Sigmoid => (Op::Sigmoid, ins[0].clone()),
        format::Op::HardSwish => (Op::HardSwish, ins[0].clone()),
        format::Op::Mul => {
            let channel_scale = ins[1].len() == 1 && ins[0].len() == 3 && ins[0][0] == ins[1][0];
            if ins[0] != ins[1] && !channel_scale {
                return Err(fail(format!(
                    "multiplies shapes {:?} and {:?} (equal shapes, or [C, H, W] and [C])",
                    ins[0], ins[1]
                )));
            }
            (Op::Mul, ins[0].clone())
        }
        format::Op::Concat => {
            let first = ins[0];
            let same_rest = ins
                .iter()
                .all(|s| s.len() == first.len() && s[1..] == first[1..]);
            if !same_rest {
                return Err(fail(format!(
                    "joins shapes {ins:?}: all must be vectors, or share H and W"
                )));
            }
            let mut out = first.clone();
            out[0] = ins.iter().map(|s| s[0]).sum();
            (Op::Concat, out)
        }
        format::Op::Pad { padding: p } => {
            let (c, h, w) = image(ins[0])?;
            (Op::Pad(p), vec![c, h + p[0] + p[2], w + p[1] + p[3]])
        }
        format::Op::Sign => {
            let threshold = match node.weights.first() {
                Some(name) => {
                    let (t, _) = loader.tensor(node, name)?;
                    if t.len() != ins[0][0] {
                        return Err(fail(format!(
                            "threshold {name:?} has {} values for an input of shape {:?} (one per \
                             channel, or per element of a vector)",
                            t.len(),
                            ins[0]
                        )));
                    }
                    Some(t.into_owned())
                }
                None => None,
            };
            (Op::Sign { threshold }, ins[0].clone())
        }
        format::Op::Add => {
            if ins[0] != ins[1] {
                return Err(fail(format!("adds shapes {:?} and {:?}", ins[0], ins[1])));
            }
            (Op::Add, ins[0].clone())
        }
    })
}

/// `data` (`rows × cols`) as CSR rows where at most `sparse_below` of its values are nonzero;
/// the nonzeros counted once, for the decision and the rows' room.
fn sparse_rows(data: &[f32], (rows, cols): (usize, usize), sparse_below: f64) -> Option<Csr> {
    let data = data.get(..rows.checked_mul(cols)?)?;
    let nonzero = ops::nonzeros(data);
    (density(nonzero, data.len()) <= sparse_below)
        .then(|| Csr::from_dense_counted(data, rows, cols, nonzero))
}

/// The fraction of `total` values that `nonzero` is.
fn density(nonzero: usize, total: usize) -> f64 {
    nonzero as f64 / total.max(1) as f64
}

fn elements(shape: &[usize]) -> u64 {
    shape.iter().fold(1u64, |n, &d| n.saturating_mul(d as u64))
}

/// How many layers read each layer's output, counted once in one pass over the inputs (the
/// folding and fusing passes change ops, and only the last of them inputs, so the counts
/// hold throughout; asking per layer would make loading quadratic in the graph's size).
fn reader_counts(layers: &[Layer<'_>]) -> Vec<usize> {
    let mut counts = vec![0; layers.len()];
    for layer in layers {
        let mut read: Vec<usize> = layer
            .inputs
            .iter()
            .filter_map(|s| match s {
                Source::Node(j) => Some(*j),
                _ => None,
            })
            .collect();
        // A layer that reads the same output twice (x + x) is one reader.
        read.sort_unstable();
        read.dedup();
        for j in read {
            counts[j] += 1;
        }
    }
    counts
}

/// Fold each batch norm into the convolution or dense layer that feeds only it:
/// `w' = w · γ/σ` per output channel, `b' = (b − μ) · γ/σ + β`.
/// `release` gets the mapped weights that folding copied.
fn fold_batch_norms(layers: &mut [Layer<'_>], release: &dyn Fn(&[f32])) {
    let readers = reader_counts(layers);
    for i in 0..layers.len() {
        let (Op::BatchNorm { scale, shift }, [Source::Node(j)]) =
            (&layers[i].op, &layers[i].inputs[..])
        else {
            continue;
        };
        let j = *j;
        if readers[j] != 1 {
            continue;
        }
        let (scale, shift) = (scale.clone(), shift.clone());
        let folded = match &mut layers[j].op {
            Op::Conv { weight, bias, .. } | Op::Dense { weight, bias } => {
                fold_into(weight, bias, &scale, &shift, release);
                true
            }
            Op::ConvChain { steps, bias } => {
                let last = steps.len() - 1;
                fold_into(&mut steps[last].0, bias, &scale, &shift, release);
                true
            }
            _ => false,
        };
        if folded {
            layers[i].op = Op::Identity("batch_norm (folded)");
        }
    }
}

/// Fuse each `sign` into the binary `conv2d` (groups 1) or `dense` that is its only reader: the
/// pair is a binary layer, run on popcounts of the input's signs at the sign's thresholds
/// ([`xnor`], unscaled). The sign becomes an identity, which the arena runs in place.
fn fuse_signs(layers: &mut [Layer<'_>], shapes: &[Vec<usize>]) {
    let readers = reader_counts(layers);
    for j in 0..layers.len() {
        let [Source::Node(i)] = layers[j].inputs[..] else {
            continue;
        };
        if readers[i] != 1 {
            continue;
        }
        let Op::Sign { threshold } = &layers[i].op else {
            continue;
        };
        let input = SignInput::Thresholds(threshold.clone());
        let fused = match &mut layers[j].op {
            Op::Conv {
                weight: Matrix::Signs(w),
                bias,
                params,
                activation: Activation::None,
                residual: false,
            } if params.groups == 1 => Op::XnorConv {
                weight: XnorWeight::Bits(BitRows::for_conv(&w.to_binary(), shapes[i][0])),
                bias: bias.take(),
                params: *params,
                input,
            },
            Op::Dense {
                weight: Matrix::Signs(w),
                bias,
            } => Op::XnorDense {
                weight: XnorWeight::Bits(BitRows::from_binary(&w.to_binary())),
                bias: bias.take(),
                input,
            },
            _ => continue,
        };
        layers[j].op = fused;
        layers[i].op = Op::Identity("sign (fused)");
    }
}

/// Binary weights of a convolution with no `sign` in front (BWN) are decoded to f32 for the
/// blocked products: adding a row of the input per weight measured 0.5x the `gemm` crate's
/// speed on LeNet-5's conv2 (124 against 63 µs, one thread, `cargo bench --bench kernels --
/// bwn`), while on a dense layer at batch 1, whose matrix-vector product is bound by reading
/// the weights, the bits were 4.7x faster (1.08 against 5.05 ms at 4096×4096). Dense layers
/// keep their bits.
fn decode_binary_convolutions(layers: &mut [Layer<'_>]) {
    for layer in layers.iter_mut() {
        if let Op::Conv { weight, .. } = &mut layer.op
            && let Matrix::Signs(signs) = weight
        {
            let dense = Matrix::dense(signs.to_dense(), signs.rows, signs.cols);
            *weight = dense;
        }
    }
}

/// Fuse each `relu`/`relu6` into the convolution it reads, when it is that convolution's only
/// reader (through batch norms already folded into it): the activation is then applied to each
/// part of the output as the convolution writes it, instead of in a pass of its own. The fused
/// layer becomes an identity.
fn fuse_activations(layers: &mut [Layer<'_>]) {
    let readers = reader_counts(layers);
    for i in 0..layers.len() {
        let (fused, shown) = match layers[i].op {
            Op::Relu => (Activation::Relu, "relu (fused)"),
            Op::Relu6 => (Activation::Relu6, "relu6 (fused)"),
            _ => continue,
        };
        let [Source::Node(mut j)] = layers[i].inputs[..] else {
            continue;
        };
        // Back through the identities that folded batch norms left, each read only here.
        while readers[j] == 1
            && let (Op::Identity(_), [Source::Node(k)]) = (&layers[j].op, &layers[j].inputs[..])
        {
            j = *k;
        }
        if readers[j] != 1 {
            continue;
        }
        if let Op::Conv { activation, .. } = &mut layers[j].op
            && *activation == Activation::None
        {
            *activation = fused;
            layers[i].op = Op::Identity(shown);
        }
    }
}

/// Fuses each residual `add` into the 1×1 convolution (stride 1, no padding, one group) that
/// gives one of its operands, where the add is that convolution's only reader (through the
/// identities that folded batch norms left) and the other operand is computed before the
/// convolution runs. The convolution takes the other operand as a second input and adds it
/// to each thread's part of its output as soon as the part is done
/// ([`ops::conv2d_plus_into`]); the add becomes an identity, which runs in place.
/// MobileNetV2's projections and Xception's middle flow end this way. (Where the other
/// operand comes later, as in Xception's entry flow, whose shortcut convolution runs before
/// the block it bypasses, fusing would keep that operand's inputs alive longer.)
fn fuse_residual_adds(layers: &mut [Layer<'_>]) {
    let readers = reader_counts(layers);
    for i in 0..layers.len() {
        let (Op::Add, &[a, b]) = (&layers[i].op, &layers[i].inputs[..]) else {
            continue;
        };
        let fusable = |conv_side: Source, other: Source| {
            let Source::Node(mut j) = conv_side else {
                return None;
            };
            while readers[j] == 1
                && let (Op::Identity(_), [Source::Node(k)]) = (&layers[j].op, &layers[j].inputs[..])
            {
                j = *k;
            }
            let Op::Conv {
                params,
                residual: false,
                ..
            } = &layers[j].op
            else {
                return None;
            };
            let pointwise = params.is_pointwise();
            let computed_before = match other {
                Source::Input => true,
                Source::Node(k) => k < j,
            };
            (readers[j] == 1 && pointwise && computed_before && other != conv_side)
                .then_some((j, conv_side, other))
        };
        let Some((j, conv_side, other)) = fusable(a, b).or_else(|| fusable(b, a)) else {
            continue;
        };
        if let Op::Conv { residual, .. } = &mut layers[j].op {
            *residual = true;
            layers[j].inputs.push(other);
            layers[i].op = Op::Identity("add (fused)");
            layers[i].inputs = vec![conv_side];
        }
    }
}

/// Repacks the weights of each 1×1 convolution whose output planes fill fewer vector lanes
/// than its channels would, by more than the repacked kernel's own cost
/// ([`kernels::channels_fill_more_lanes`]), as channel panels, in
/// place of the row-major weights (mapped pages are given to `release`). Only where one of
/// the runtime's own kernels runs (AVX-512, or AVX2 with FMA), the only ones that read them.
fn pack_channel_panels(layers: &mut [Layer<'_>], shapes: &[Vec<usize>], release: &dyn Fn(&[f32])) {
    if !kernels::channel_panels_available() {
        return;
    }
    for (layer, shape) in layers.iter_mut().zip(shapes) {
        let Op::Conv { weight, params, .. } = &mut layer.op else {
            continue;
        };
        let pointwise = params.is_pointwise();
        let plane = shape.iter().skip(1).product::<usize>();
        let Matrix::Dense { data, rows, cols } = weight else {
            continue;
        };
        let (rows, cols) = (*rows, *cols);
        if !pointwise || !kernels::channels_fill_more_lanes(rows, cols, plane) {
            continue;
        }
        let data = match std::mem::take(data) {
            Cow::Borrowed(values) => copy_out_releasing(values, release),
            Cow::Owned(values) => values,
        };
        *weight = match kernels::ChannelPanels::pack_in_place(data, rows, cols) {
            Ok(panels) => Matrix::Panels(panels),
            Err(values) => Matrix::dense(values, rows, cols),
        };
    }
}

/// Gives each convolution that [`winograd::suits`] its weights in Winograd's domain as well,
/// releasing the mapped pages of the dense weights, which no pass reads again. A layer whose
/// transform cannot be allocated keeps its direct product.
fn transform_for_winograd(layers: &mut [Layer<'_>], release: &dyn Fn(&[f32])) {
    for layer in layers.iter_mut() {
        let Op::Conv { weight, params, .. } = &mut layer.op else {
            continue;
        };
        let Matrix::Dense { data, rows, cols } = weight else {
            continue;
        };
        let (cout, cin) = (*rows, *cols / 9);
        if *cols % 9 != 0 || !winograd::suits(params, cin, cout) {
            continue;
        }
        let Some(domain) = WinogradWeights::transform(data, cout, cin) else {
            continue;
        };
        if let Cow::Borrowed(values) = data {
            release(values);
        }
        let dense = Box::new(std::mem::replace(weight, Matrix::dense(Vec::new(), 0, 0)));
        *weight = Matrix::Winograd {
            dense,
            domain: Box::new(domain),
        };
    }
}

/// `w' = w · s` per output row, `b' = b · s + t`. Weights borrowed from the map are copied
/// to be scaled, and `release` gets the originals, which no pass reads again.
fn fold_into(
    weight: &mut Matrix<'_>,
    bias: &mut Option<Vec<f32>>,
    scale: &[f32],
    shift: &[f32],
    release: &dyn Fn(&[f32]),
) {
    let b = bias.get_or_insert_with(|| vec![0.0; weight.rows()]);
    for (r, bv) in b.iter_mut().enumerate() {
        *bv = *bv * scale[r] + shift[r];
    }
    if let Matrix::Dense { data, .. } = weight
        && let Cow::Borrowed(values) = *data
    {
        *data = Cow::Owned(copy_out_releasing(values, release));
    }
    weight.scale_rows(scale);
}

/// `values`, borrowed from the map, copied out a chunk at a time, each chunk's pages given to
/// `release` once it is copied. Copying a whole tensor before giving its pages back held both
/// at once: Xception's largest weight (1536 → 2048, 12.6 MB) was resident twice at the end of
/// folding, and that was the peak of the whole run (101.1–101.5 MB against 87.5 after load).
/// The chunks end at addresses that are multiples of their size: reading the start of a chunk
/// maps the pages around it that are in the page cache (Linux's fault-around, 64 KiB), and
/// with chunks at any address that brought back the end of the chunk before, 21 MB of
/// Xception's 84 that stayed resident beside the copies.
fn copy_out_releasing(values: &[f32], release: &dyn Fn(&[f32])) -> Vec<f32> {
    /// 256 KiB: a few dozen pages resident twice at most.
    const CHUNK_BYTES: usize = 256 << 10;
    let mut copy = Vec::with_capacity(values.len());
    let mut rest = values;
    while !rest.is_empty() {
        let to_boundary = CHUNK_BYTES - rest.as_ptr() as usize % CHUNK_BYTES;
        let (chunk, after) = rest.split_at(to_boundary.div_ceil(4).min(rest.len()));
        copy.extend_from_slice(chunk);
        release(chunk);
        rest = after;
    }
    copy
}

/// Turn one preprocessed image `[C, H, W]` into a batch of one.
pub fn batch_of_one(image: ndarray::Array3<f32>) -> Array4<f32> {
    image.insert_axis(ndarray::Axis(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A convolution with zero weights `rows × cols`, at stride 1.
    fn conv(rows: usize, cols: usize, kernel: usize, groups: usize) -> Op<'static> {
        Op::Conv {
            weight: Matrix::dense(vec![0.0; rows * cols], rows, cols),
            bias: None,
            params: Conv2dParams {
                kernel: [kernel; 2],
                stride: [1, 1],
                padding: [kernel / 2; 4],
                dilation: [1, 1],
                groups,
            },
            activation: Activation::None,
            residual: false,
        }
    }

    fn pointwise(rows: usize, cols: usize) -> Op<'static> {
        conv(rows, cols, 1, 1)
    }

    fn depthwise(channels: usize) -> Op<'static> {
        conv(channels, 9, 3, channels)
    }

    fn layer(op: Op<'static>, input: Source) -> Layer<'static> {
        Layer {
            name: String::new(),
            op,
            inputs: vec![input],
        }
    }

    /// Each layer's output as its own value, of `len` elements, alive from its step to the
    /// next layer's; the input until the first layer.
    fn chain_lifetimes(lens: &[usize]) -> (Vec<Lifetime>, Vec<usize>) {
        let lifetimes = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| Lifetime {
                len,
                first: i,
                last: (i + 1).min(lens.len() - 1),
            })
            .collect();
        (lifetimes, (0..lens.len()).collect())
    }

    #[test]
    fn what_every_thread_reads_whole_is_placed_apart_from_what_comes_soon_after() {
        // A 1×1 convolution at 14×14, split by rows, then one at 112×112 with 16 rows, which
        // the own kernels split by columns.
        let layers = vec![
            layer(Op::Relu, Source::Input),
            layer(pointwise(64, 16), Source::Node(0)),
            layer(Op::Relu, Source::Node(1)),
            layer(pointwise(16, 64), Source::Node(2)),
        ];
        let shapes = [[16, 14, 14], [64, 14, 14], [64, 14, 14], [16, 112, 112]].map(Vec::from);
        let (lifetimes, storage) = chain_lifetimes(&[100; 5]);
        let one = placement_lifetimes(&layers, &shapes, &storage, &lifetimes, 1);
        assert_eq!(
            one, lifetimes,
            "one thread places values by their own lifetimes"
        );
        let two = placement_lifetimes(&layers, &shapes, &storage, &lifetimes, 2);
        let mut want = lifetimes.clone();
        // The pass touches far less than the window: kept apart to its end.
        want[1].last = layers.len();
        if !kernels::own_kernel_available() {
            // The other kernels split every product by rows.
            want[3].last = layers.len();
        }
        assert_eq!(two, want);
    }

    #[test]
    fn planes_read_by_pixels_are_kept_apart_until_the_window_of_bytes_has_passed() {
        // A depthwise layer (a part of the planes to each thread), a 1×1 convolution at 56×56
        // that the own kernels split by columns (the same pixels of every plane to each
        // thread), then layers that touch more than the window between them.
        // Half the window's bytes: step 3 touches less than the window, steps 3 and 4 more.
        let big = SHARED_WINDOW_BYTES as usize / 4 / 2;
        let layers = vec![
            layer(depthwise(32), Source::Input),
            layer(pointwise(64, 32), Source::Node(0)),
            layer(Op::Relu, Source::Node(1)),
            layer(Op::Relu, Source::Node(2)),
            layer(Op::Relu, Source::Node(3)),
        ];
        let shapes = [
            [32, 56, 56],
            [64, 56, 56],
            [1, 1024, 1024],
            [1, 1024, 1024],
            [1, 1, 1],
        ];
        let shapes = shapes.map(Vec::from);
        let lens: Vec<usize> = [32 * 56 * 56, 32 * 56 * 56, 64 * 56 * 56, big, big, 1].into();
        let (lifetimes, storage) = chain_lifetimes(&lens);
        let two = placement_lifetimes(&layers, &shapes, &storage, &lifetimes, 2);
        // The depthwise layer's output (value 1), read at step 2, is kept apart through
        // step 4, by whose end the window has passed.
        assert_eq!(two[1].last, 4, "{two:?}");
        // Values longer than a core's L2 are placed by their own lifetimes.
        let long = [32 * 56 * 56, 2 * SHARED_MOST_LEN, 64 * 56 * 56, big, big, 1];
        let (lifetimes, storage) = chain_lifetimes(&long);
        let two = placement_lifetimes(&layers, &shapes, &storage, &lifetimes, 2);
        assert_eq!(two[1], lifetimes[1]);
    }

    #[test]
    fn a_copy_out_of_the_map_gives_back_every_value_in_chunks_that_end_on_boundaries() {
        let values: Vec<f32> = (0..300_000).map(|i| i as f32).collect();
        // An odd start, so that the first chunk is a short one.
        let values = &values[3..];
        let released = RefCell::new(Vec::new());
        let copy = copy_out_releasing(values, &|chunk| {
            released
                .borrow_mut()
                .push((chunk.as_ptr() as usize, chunk.len()))
        });
        assert_eq!(copy, values);
        let released = released.into_inner();
        assert!(released.len() > 2, "{} chunks", released.len());
        let mut at = values.as_ptr() as usize;
        for (i, &(start, len)) in released.iter().enumerate() {
            assert_eq!(start, at, "chunk {i} follows the one before");
            at += 4 * len;
            if i + 1 < released.len() {
                assert_eq!(at % (256 << 10), 0, "chunk {i} ends on a boundary");
            }
        }
        assert_eq!(
            at,
            values.as_ptr() as usize + 4 * values.len(),
            "every value"
        );
    }
}
