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
//!
//! The parts, in the order a model meets them: `options` (what the caller may set),
//! `load` (each node of the graph into a `layer`, its weights in their kernels' form),
//! `rewrites` (what is folded, fused and repacked once), `placement` (each value's place
//! in the arena), `pass` (one image's forward pass) and `groups` (a batch's images run
//! together where that reads the weights once). This file holds the model and what it
//! answers about itself.

mod groups;
mod layer;
mod load;
mod options;
mod pass;
mod placement;
mod rewrites;

// The parts of a model, for one another (they import this module whole).
use groups::{Group, GroupPlan, runs_images_together};
use layer::{Layer, Op, Source};
use load::elements;
pub use options::RuntimeOptions;
use options::{
    CONV_SPARSE_FACTOR, CONV_SPARSE_MID_PIXELS, CONV_SPARSE_MIN_PIXELS, MID_CONV_SPARSE_FACTOR,
    MOST_SPARSE_FACTOR, SMALL_CONV_SPARSE_FACTOR,
};
use pass::{aligned_arena, take_buffer, value_beside};
use placement::{in_place_inputs, placement_lifetimes, value_index, value_lifetimes};
use rewrites::{
    copy_out_releasing, decode_binary_convolutions, fold_batch_norms, fuse_activations,
    fuse_residual_adds, fuse_signs, pack_channel_panels, transform_for_winograd,
};

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

impl<'a> Model<'a> {
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
    /// are shared among the threads in groups (`Model::forward_images`), which run the small
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
}

/// Turn one preprocessed image `[C, H, W]` into a batch of one.
pub fn batch_of_one(image: ndarray::Array3<f32>) -> Array4<f32> {
    image.insert_axis(ndarray::Axis(0))
}
